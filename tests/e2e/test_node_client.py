"""Another team's client in another language: clients/node/walkthrough.mjs (Node.js, @grpc/grpc-js,
the .proto files loaded as they are) places an order through every service, each its own process,
in plaintext and over mutual TLS with the deployment's own files; clients/node/events.mjs reads
the order's events from JetStream and decodes them."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from a4co.events.v1 import envelope_pb2
from a4co.orders.events.v1 import order_events_pb2
from services.launcher.supervisor import Supervisor
from services.platform.events.connection import connect
from services.platform.grpc.tls import Tls
from services.platform.local_servers import ServerUrls
from tests.integration.services.harness import Keys
from tests.support.certificates import Pki
from tests.support.node import CLIENT, node, run_node
from tests.support.processes import communicate


@dataclass(frozen=True)
class Deployment:
    addresses: Path  # the file the supervisor writes, as make run's .data/addresses.json
    tls: dict[str, str]  # the A4CO_TLS_* files a client on the same machine is given, if any
    nats: dict[str, str]  # where its events are: A4CO_NATS_URL and A4CO_PREFIX


@pytest_asyncio.fixture(params=["plaintext", "mutual TLS"], scope="module", loop_scope="session")
async def deployment(
    request: pytest.FixtureRequest, urls: ServerUrls, keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deployment]:
    """Every service under the supervisor, in plaintext or serving mutual TLS."""
    node()
    run_dir = Path(tmp_path_factory.mktemp("run"))
    tls: dict[str, str] = {}
    if request.param == "mutual TLS":
        tls = Pki.create(run_dir, "service").env(mutual=True)
    nats = {"A4CO_NATS_URL": urls.nats_url, "A4CO_PREFIX": "n" + uuid.uuid4().hex[:12]}
    env = dict(
        os.environ,
        **urls.as_env(),
        **tls,
        A4CO_PREFIX=nats["A4CO_PREFIX"],
        A4CO_JWT_PRIVATE_KEY_FILE=str(keys.private_file),
        A4CO_JWT_PUBLIC_KEY_FILE=str(keys.public_file),
        A4CO_NOTIFICATIONS_DIR=str(run_dir / "mail"),
        A4CO_LOG_LEVEL="WARNING",
    )
    supervisor = Supervisor(run_dir, env)
    await supervisor.start()
    yield Deployment(run_dir / "addresses.json", tls, nats)
    await supervisor.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def walkthrough(deployment: Deployment) -> dict[str, dict[str, Any]]:
    """What each step of the walkthrough printed, by step, once it exited 0: run once for each
    deployment, and read by the tests of its answers and of its events."""
    code, out, err = await run_node("walkthrough.mjs", str(deployment.addresses), env=deployment.tls)
    steps: dict[str, dict[str, Any]] = {}
    for line in out.splitlines():
        step = json.loads(line)
        steps[step.pop("step")] = step
    assert code == 0, (out, err)
    return steps


async def test_an_order_placed_from_node_goes_through_the_saga(
    walkthrough: dict[str, dict[str, Any]],
) -> None:
    steps = walkthrough

    # Every invalid field named, as decoded from the BadRequest in grpc-status-details-bin.
    assert steps["invalid sign-up"] == {
        "code": "INVALID_ARGUMENT",
        "reason": "INVALID_REQUEST",
        "fields": ["display_name", "email", "password"],
    }
    # Money's int64 arrives as a string, the enums by name.
    assert steps["product on sale"]["price_cents"] == "2450"
    placed = steps["order placed"]
    assert placed["status"] == "ORDER_STATUS_PENDING"
    assert placed["same_order_on_retry"] is True  # the request_id
    total = int(placed["total_cents"])
    assert total > 2 * 2450  # two units and the delivery
    # The server stream told the customer each step, then ended when the client cancelled it.
    # (notifications follows ORDERS and PAYMENTS each in its own order, not one across both.)
    confirmed = dict(steps["order confirmed"])  # a copy: the fixture's steps are shared
    assert sorted(confirmed.pop("notifications")) == [
        "a4co.orders.OrderCreated",
        "a4co.orders.OrderStatusChanged",
        "a4co.payments.PaymentProcessed",
    ]
    assert confirmed == {
        "status": "ORDER_STATUS_CONFIRMED",
        "told": "Pedido confirmado",
        "stream_ended": "CANCELLED",
    }
    assert steps["out of stock"] == {
        "code": "FAILED_PRECONDITION",
        "reason": "OUT_OF_STOCK",
        "domain": "orders.a4co",
    }
    # The welcome points and a point per euro paid.
    assert steps["points"] == {"points": str(50 + total // 100), "entries": 2}
    assert steps["deadline"] == {"code": "DEADLINE_EXCEEDED"}


@pytest.mark.parametrize("deployment", ["mutual TLS"], indirect=True)
async def test_a_plaintext_client_of_a_tls_deployment_fails_at_its_first_call(
    deployment: Deployment,
) -> None:
    code, out, _ = await run_node("walkthrough.mjs", str(deployment.addresses))
    assert code == 1
    failed = json.loads(out.splitlines()[-1])
    assert (failed["step"], failed["code"]) == ("failed", "UNAVAILABLE"), out
    assert len(out.splitlines()) == 1, out  # not past the first step


async def test_the_orders_events_read_and_decoded_from_node(
    deployment: Deployment, walkthrough: dict[str, dict[str, Any]]
) -> None:
    """The ORDERS stream read with an ordered consumer, each body decoded as the envelope and its
    payload as the message its Any names; `--subject` narrows it to one event type."""
    steps = walkthrough
    order_id = steps["order placed"]["order_id"]
    env = {**deployment.tls, **deployment.nats}
    code, out, err = await run_node("events.mjs", "--stream", "ORDERS", env=env)
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    prefix = deployment.nats["A4CO_PREFIX"]
    assert all(e["subject"].startswith(f"{prefix}.a4co.orders.") for e in events), out
    assert all(e["ce_type"] == e["event_type"] for e in events), out
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    mine = [e for e in events if e["aggregate_id"] == order_id]
    assert [(e["payload_type"], e["payload"].get("status")) for e in mine] == [
        ("a4co.orders.events.v1.OrderCreated", None),
        ("a4co.orders.events.v1.OrderStatusChanged", "ORDER_STATUS_PAID"),
        ("a4co.orders.events.v1.OrderStatusChanged", "ORDER_STATUS_CONFIRMED"),
    ]
    created = mine[0]
    assert created["event_version"] == 1
    assert created["payload"]["total"]["amount_cents"] == steps["order placed"]["total_cents"]
    assert created["payload"]["lines"][0]["product_id"] == steps["product on sale"]["product_id"]
    assert len({e["correlation_id"] for e in mine}) == 1  # one business flow
    # Its times as protobuf's JSON mapping writes them, in Python as in Node (RFC 3339).
    nc = await connect(deployment.nats["A4CO_NATS_URL"], Tls.from_env(deployment.tls))
    try:
        stored = await nc.jetstream().get_msg(f"{prefix}_ORDERS", created["seq"])
    finally:
        await nc.close()
    envelope = envelope_pb2.EventEnvelope.FromString(stored.data or b"")
    payload = order_events_pb2.OrderCreated()
    assert envelope.payload.Unpack(payload)
    assert created["occurred_at"] == envelope.occurred_at.ToJsonString()
    assert payload.create_time.seconds > 0
    assert created["payload"]["create_time"] == payload.create_time.ToJsonString()

    code, out, err = await run_node(
        "events.mjs", "--stream", "ORDERS", "--subject", "a4co.orders.order.created", env=env
    )
    assert code == 0, err
    created_only = [json.loads(line) for line in out.splitlines()]
    assert {e["event_type"] for e in created_only} == {"a4co.orders.OrderCreated"}
    assert [e["seq"] for e in created_only] == [
        e["seq"] for e in events if e["event_type"] == "a4co.orders.OrderCreated"
    ]


@pytest.mark.parametrize("deployment", ["plaintext"], indirect=True)
async def test_a_reader_that_stops_reading_ends_events_quietly(
    deployment: Deployment, walkthrough: dict[str, dict[str, Any]]
) -> None:
    """`events.mjs | true`: the pipe closed before the first line is written ends it with status 0
    and nothing on standard error, as `| head` ends any filter."""
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", f"'{node()}' events.mjs --stream ORDERS | true; exit ${{PIPESTATUS[0]}}",
        cwd=CLIENT, env={**os.environ, **deployment.nats},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await communicate(proc, 90)
    assert (proc.returncode, err.decode()) == (0, "")


@pytest.mark.parametrize("deployment", ["plaintext"], indirect=True)
async def test_nats_is_found_in_the_addresses_of_a4co_data_dir(
    deployment: Deployment, walkthrough: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """Without A4CO_NATS_URL, NATS's address is read from `make run`'s addresses.json in
    A4CO_DATA_DIR, relative to the working directory, as the `a4co` command reads it."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "addresses.json").write_text(
        json.dumps({"servers": {"A4CO_NATS_URL": deployment.nats["A4CO_NATS_URL"]}})
    )
    env = {k: v for k, v in os.environ.items() if k != "A4CO_NATS_URL"}
    proc = await asyncio.create_subprocess_exec(
        node(), CLIENT / "events.mjs", "--stream", "ORDERS", cwd=tmp_path,
        env={**env, "A4CO_DATA_DIR": "data", "A4CO_PREFIX": deployment.nats["A4CO_PREFIX"]},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await communicate(proc, 60)
    assert proc.returncode == 0, err.decode()
    assert {json.loads(line)["event_type"] for line in out.decode().splitlines()} >= {
        "a4co.orders.OrderCreated"
    }


@pytest.mark.parametrize("deployment", ["plaintext"], indirect=True)
async def test_reading_a_stream_that_does_not_exist_says_so(deployment: Deployment) -> None:
    code, out, err = await run_node("events.mjs", "--stream", "NOPE", env=deployment.nats)
    assert (code, out) == (1, "")
    assert err.startswith("events: no stream NOPE (NATS at nats://"), err


@pytest.mark.parametrize("deployment", ["plaintext"], indirect=True)
async def test_a_subject_with_no_events_in_the_stream_reads_nothing_and_ends(
    deployment: Deployment, walkthrough: dict[str, dict[str, Any]]
) -> None:
    """ORDERS holds the walkthrough's order, but no order has been delivered."""
    env = {**deployment.tls, **deployment.nats}
    code, out, err = await run_node(
        "events.mjs", "--stream", "ORDERS", "--subject", "a4co.orders.order.delivered", env=env, timeout=30
    )
    assert (code, out) == (0, ""), err
