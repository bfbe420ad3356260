"""What each NATS user of a deployment may do (decision 68), derived from the contracts and the
subscription tables: a service its own subjects, streams, consumers and inbox, nothing of another
context's; and how a refusal is said (DenialLog)."""

from __future__ import annotations

import logging

import pytest
from nats.errors import Error
from prometheus_client import REGISTRY

from services.cli.permissions import consumed_streams, deployment_users
from services.platform.events.connection import REPEAT_S, DenialLog, denied
from services.platform.events.permissions import (
    COMMAND,
    READER,
    Permissions,
    render_config,
    render_nsc,
    service_permissions,
    streams_used,
)
from services.platform.events.registry import EventRegistry, load_registry, subject_matches
from services.platform.events.topology import Topology
from tests.support.clock import Clock

REGISTRY_ = load_registry()  # the contracts as generated


def allowed(subject: str, allow: tuple[str, ...], deny: tuple[str, ...] = ()) -> bool:
    """Whether NATS lets a user with these permissions use `subject`."""
    return any(subject_matches(subject, p) for p in allow) and not any(
        subject_matches(subject, p) for p in deny
    )


def users(prefix: str = "") -> dict[str, Permissions]:
    return {p.user: p for p in deployment_users(Topology(prefix))}


def event_subject(registry: EventRegistry, stream: str) -> str:
    """A subject of one of `stream`'s events."""
    return next(e.subject for e in registry.events if e.stream == stream)


def test_a_service_publishes_its_own_contexts_events_and_no_others() -> None:
    everyone = users()
    for stream in REGISTRY_.streams:
        if stream.name == "DLQ":
            continue
        subject = event_subject(REGISTRY_, stream.name)
        may = sorted(
            u for u, p in everyone.items() if u not in (COMMAND, READER) and allowed(subject, p.publish)
        )
        assert may == [stream.producer], (subject, may)


def test_a_service_dead_letters_under_its_own_name_only() -> None:
    orders = users()["orders"]
    assert allowed("a4co.dlq.orders.a4co.payments.payment.processed", orders.publish)
    assert not allowed("a4co.dlq.inventory.a4co.orders.order.created", orders.publish)


def test_a_service_reads_and_acks_its_own_durable_consumers_and_hears_its_own_inbox() -> None:
    everyone = users()
    inventory = everyone["inventory"]
    assert "ORDERS" in consumed_streams(REGISTRY_)["inventory"]
    for subject in (
        "$JS.API.CONSUMER.DURABLE.CREATE.ORDERS.inventory_ORDERS",
        "$JS.API.CONSUMER.MSG.NEXT.ORDERS.inventory_ORDERS",
        "$JS.API.CONSUMER.INFO.ORDERS.inventory_ORDERS",
        "$JS.ACK.ORDERS.inventory_ORDERS.1.5.5.1764680000000000000.0",
        "$JS.API.STREAM.INFO.ORDERS",
        "$JS.API.INFO",
    ):
        assert allowed(subject, inventory.publish), subject
    for subject in (
        "$JS.API.CONSUMER.MSG.NEXT.ORDERS.payments_ORDERS",
        "$JS.ACK.ORDERS.payments_ORDERS.1.5.5.1764680000000000000.0",
        "$JS.API.CONSUMER.DELETE.ORDERS.inventory_ORDERS",
        "$JS.API.STREAM.DELETE.ORDERS",
        "$JS.API.STREAM.PURGE.ORDERS",
    ):
        assert not allowed(subject, inventory.publish), subject
    assert allowed("_INBOX.inventory.x1", inventory.subscribe)
    assert not allowed("_INBOX.orders.x1", inventory.subscribe)
    assert not allowed("a4co.orders.order.created", inventory.subscribe)


def test_a_service_declares_the_streams_it_publishes_to_and_consumes_and_no_other() -> None:
    consumed = consumed_streams(REGISTRY_)
    geo = service_permissions("geo", REGISTRY_, consumed["geo"], Topology())
    used = streams_used("geo", REGISTRY_, consumed["geo"])
    assert "DLQ" in used
    assert set(used) == {"DLQ", *consumed["geo"]}
    for stream in REGISTRY_.streams:
        verdict = allowed(f"$JS.API.STREAM.UPDATE.{stream.name}", geo.publish)
        assert verdict == (stream.name in used), stream.name


def test_under_a_prefix_every_name_is_the_prefixed_one() -> None:
    plain, prefixed = users(), users("t1")
    orders = prefixed["orders"]
    assert allowed("t1.a4co.orders.order.created", orders.publish)
    assert not allowed("a4co.orders.order.created", orders.publish)
    assert allowed("$JS.API.CONSUMER.MSG.NEXT.t1_PAYMENTS.t1_orders_PAYMENTS", orders.publish)
    assert not allowed("$JS.API.CONSUMER.MSG.NEXT.PAYMENTS.orders_PAYMENTS", orders.publish)
    assert orders.subscribe == ("_INBOX.t1_orders.>",)
    assert len(orders.publish) == len(plain["orders"].publish)


def test_the_reader_reads_every_stream_with_its_own_consumers_but_not_the_services() -> None:
    reader = users()[READER]
    for subject in (
        "$JS.API.CONSUMER.CREATE.ORDERS.reader1.a4co.orders.>",
        "$JS.API.CONSUMER.DURABLE.CREATE.DLQ.team_dlq",
        "$JS.API.CONSUMER.MSG.NEXT.ORDERS.team_orders",
        "$JS.API.CONSUMER.DELETE.ORDERS.team_orders",
        "$JS.API.STREAM.INFO.PAYMENTS",
    ):
        assert allowed(subject, reader.publish, reader.publish_deny), subject
    for subject in (
        "$JS.API.CONSUMER.DELETE.ORDERS.inventory_ORDERS",
        "$JS.API.CONSUMER.MSG.NEXT.ORDERS.inventory_ORDERS",
        "$JS.ACK.ORDERS.payments_ORDERS.1.5.5.1764680000000000000.0",
        "$JS.API.STREAM.DELETE.ORDERS",
        "a4co.orders.order.created",
    ):
        assert not allowed(subject, reader.publish, reader.publish_deny), subject
    assert allowed("_INBOX.Hx7bq2LmN0pQ4rS6tU8vW9.1", reader.subscribe, reader.subscribe_deny)
    for service in ("orders", "inventory", "analytics"):
        assert not allowed(f"_INBOX.{service}.x1", reader.subscribe, reader.subscribe_deny), service


def test_the_command_may_do_anything_on_its_deployments_streams_and_nothing_on_anothers() -> None:
    command = users("t1")[COMMAND]
    for subject in (
        "$JS.API.INFO",
        "$JS.API.STREAM.INFO.t1_ORDERS",
        "$JS.API.STREAM.PURGE.t1_DLQ",
        "$JS.API.STREAM.MSG.GET.t1_DLQ",
        "$JS.API.STREAM.MSG.DELETE.t1_DLQ",
        "$JS.API.DIRECT.GET.t1_ORDERS",
        "$JS.API.CONSUMER.LIST.t1_ORDERS",
        "$JS.API.CONSUMER.CREATE.t1_ORDERS.x1.t1.a4co.orders.>",
        "$JS.API.CONSUMER.DELETE.t1_ORDERS.t1_inventory_ORDERS",
        "$JS.API.CONSUMER.MSG.NEXT.t1_ORDERS.t1_inventory_ORDERS",
        "$JS.FC.t1_ORDERS.x1.1",
        "t1.a4co.orders.order.created",
    ):
        assert allowed(subject, command.publish), subject
    assert allowed("_INBOX.Hx7bq2LmN0pQ4rS6tU8vW9.1", command.subscribe, command.subscribe_deny)
    assert not allowed("_INBOX.t1_orders.x1", command.subscribe, command.subscribe_deny)
    for subject in (
        "$JS.API.STREAM.NAMES",  # the names of every deployment's streams
        "$JS.API.STREAM.LIST",
        "$JS.API.STREAM.INFO.ORDERS",
        "$JS.API.STREAM.DELETE.t2_ORDERS",
        "$JS.API.STREAM.MSG.GET.t2_DLQ",
        "$JS.API.CONSUMER.DELETE.ORDERS.inventory_ORDERS",
        "$JS.API.CONSUMER.MSG.NEXT.t2_ORDERS.t2_inventory_ORDERS",
        "$JS.ACK.ORDERS.inventory_ORDERS.1.5.5.1764680000000000000.0",
        "a4co.orders.order.created",
    ):
        assert not allowed(subject, command.publish), subject


def test_no_deployments_inboxes_fall_under_anothers_whatever_the_names() -> None:
    """A prefix named as a service: the unprefixed deployment's orders may not hear the prefixed
    deployment's payments, nor the other way round."""
    plain, prefixed = users()["orders"], users("orders")["payments"]
    assert not allowed(f"{Topology('orders').inbox('payments')}.x1", plain.subscribe)
    assert not allowed(f"{Topology().inbox('orders')}.x1", prefixed.subscribe)
    assert allowed(f"{Topology('orders').inbox('payments')}.x1", prefixed.subscribe)


def test_the_configuration_names_each_user_with_a_password_from_the_environment() -> None:
    text = render_config(users("t1").values(), Topology("t1"))
    assert text.count("password: $A4CO_NATS_PASSWORD_") == len(users())
    assert 'user: "orders"' in text
    assert "password: $A4CO_NATS_PASSWORD_ORDERS" in text
    assert '"t1.a4co.orders.>"' in text
    assert ', deny: ["$JS.API.CONSUMER.*.t1_' in text
    assert '"$JS.API.CONSUMER.*.*.t1_ARTISANS.t1_catalog_ARTISANS"' in text


def test_the_nsc_commands_quote_every_subject_list() -> None:
    text = render_nsc(users().values(), "A4CO")
    assert "nsc add user --account 'A4CO' --name 'orders' \\\n  --allow-pub 'a4co.orders.>," in text
    assert "  --allow-sub '_INBOX.orders.>'" in text
    assert "  --deny-pub '$JS.API.CONSUMER.*." in text
    assert ",$JS.API.CONSUMER.*.*.ARTISANS.catalog_ARTISANS," in text


def violations(service: str) -> float:
    return REGISTRY.get_sample_value("a4co_nats_permission_violations_total", {"service": service}) or 0.0


def test_a_refused_subject_is_said_once_every_repeat_and_each_refusal_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    log = DenialLog("unit-denials", clock)
    publish = Error('nats: permissions violation for publish to "a4co.orders.order.created"')
    subscribe = Error('nats: permissions violation for subscription to "_inbox.orders.>"')
    assert denied(publish)
    assert denied(subscribe)
    assert not denied(Error("nats: stale connection"))
    with caplog.at_level(logging.INFO, logger="services.platform.events.connection"):
        for _ in range(5):
            log.denied(publish)
        log.denied(subscribe)
        clock.now += REPEAT_S
        log.denied(publish)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(lines) == 3, lines
    assert 'publish to "a4co.orders.order.created"' in lines[0]
    assert "a4co nats-permissions" in lines[0]
    assert 'subscription to "_inbox.orders.>"' in lines[1]
    assert violations("unit-denials") == 7
