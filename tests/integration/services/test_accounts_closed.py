"""A closed account (UserDeleted) forgotten by the services that keep something of the person:
notifications, cms and payments, and not brought back by an event about them arriving late."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from a4co.artisans.events.v1 import artisan_events_pb2 as artisans
from a4co.cms.v1 import cms_service_pb2 as cms_pb
from a4co.cms.v1 import cms_service_pb2_grpc as cms_grpc
from a4co.identity.events.v1 import identity_events_pb2 as identity
from a4co.orders.events.v1 import order_events_pb2 as orders
from a4co.payments.v1 import payments_service_pb2 as payments_pb
from a4co.payments.v1 import payments_service_pb2_grpc as payments_grpc
from services.cms.__main__ import build as build_cms
from services.notifications.__main__ import build as build_notifications
from services.platform.auth import Role
from services.platform.grpc.status import details_of
from services.platform.local_servers import ServerUrls
from tests.integration.services.conftest import BUILDS
from tests.integration.services.harness import (
    Keys,
    RunningService,
    publish_event,
    running_services,
    token,
)
from tests.support.rpc import failure
from tests.support.waiting import eventually


@pytest_asyncio.fixture
async def keepers(
    urls: ServerUrls, prefix: str, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[dict[str, RunningService]]:
    monkeypatch.setenv("A4CO_NOTIFICATIONS_DIR", str(tmp_path / "mail"))
    builds = {"notifications": build_notifications, "cms": build_cms, "payments": BUILDS["payments"]}
    async with running_services(builds, urls, prefix, keys) as running:
        yield running


def delivered(customer_id: str) -> orders.OrderDelivered:
    """An event for notifications alone (payments would charge an OrderCreated, and say so)."""
    return orders.OrderDelivered(order_id=str(uuid.uuid4()), customer_id=customer_id, artisan_id="a-1")


def mailed(tmp_path: Path) -> list[tuple[str, str]]:
    """(to, subject) of every message mailed; to an address once notifications knows it, else to
    the user id (each stream is read apart, so an order's message may come before the welcome)."""
    path = tmp_path / "mail" / "outbox.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [(m["to"], m["subject"]) for m in map(json.loads, lines)]


def to_luis(tmp_path: Path) -> list[str]:
    return sorted(subject for to, subject in mailed(tmp_path) if to in ("luis@jaen.es", "c-8"))


async def test_a_closed_account_is_forgotten_and_a_late_event_brings_nothing_back(
    keepers: dict[str, RunningService], keys: Keys, tmp_path: Path
) -> None:
    notifications, cms, payments = keepers["notifications"], keepers["cms"], keepers["payments"]
    luis = token(keys, "c-8", Role.CUSTOMER)
    payments_stub = payments_grpc.PaymentsServiceStub(payments.channel)
    card = await payments_stub.ValidatePaymentMethod(
        payments_pb.ValidatePaymentMethodRequest(
            card=payments_pb.Card(number="4242424242424242", exp_month=12, exp_year=2031, cvc="123")
        ),
        metadata=luis,
    )
    registered = identity.UserRegistered(
        user_id="c-8", email="luis@jaen.es", display_name="Luis", role=identity.USER_ROLE_CUSTOMER
    )
    await publish_event(notifications, registered, "c-8")
    await publish_event(notifications, delivered("c-8"), "o-8")
    await eventually(lambda: len(to_luis(tmp_path)) == 2, what="Luis's two messages mailed")
    cms_stub = cms_grpc.CmsServiceStub(cms.channel)

    async def page_shown() -> bool:
        try:
            await cms_stub.GetPublicProfile(cms_pb.GetPublicProfileRequest(user_id="c-8"))
        except grpc.aio.AioRpcError:
            return False
        return True

    await eventually(page_shown, what="Luis's public page")

    await publish_event(notifications, identity.UserDeleted(user_id="c-8"), "c-8")

    async def forgotten() -> bool:
        notified = await notifications.infra.pool.fetchval(
            "SELECT count(*) FROM forgotten WHERE user_id = 'c-8'"
        )
        paged = await cms.infra.pool.fetchval("SELECT count(*) FROM forgotten WHERE user_id = 'c-8'")
        return bool(notified and paged)

    await eventually(forgotten, what="Luis forgotten")
    # Late events about Luis (a redelivery, an order of his settling, a workshop of his leaving),
    # then Eva's and a workshop's on each stream:
    # once hers are handled, so are his before them.
    await publish_event(notifications, identity.ProfileUpdated(user_id="c-8", display_name="Luis"), "c-8")
    await publish_event(notifications, registered, "c-8")  # redelivered
    await publish_event(notifications, delivered("c-8"), "o-9")
    left = artisans.ArtisanOffboarded(artisan_id="c-8", display_name="Taller de Luis", revision=2)
    await publish_event(notifications, left, "c-8")
    eva = identity.UserRegistered(user_id="c-9", email="eva@jaen.es", display_name="Eva")
    await publish_event(notifications, eva, "c-9")
    await publish_event(notifications, delivered("c-9"), "o-10")
    await publish_event(
        notifications, artisans.ArtisanOnboarded(artisan_id="a-10", display_name="Forja"), "a-10"
    )

    async def eva_seen() -> bool:
        to_eva = [subject for to, subject in mailed(tmp_path) if to in ("eva@jaen.es", "c-9")]
        try:
            await cms_stub.GetPublicProfile(cms_pb.GetPublicProfileRequest(user_id="c-9"))
            await cms_stub.GetPublicProfile(cms_pb.GetPublicProfileRequest(user_id="a-10"))
        except grpc.aio.AioRpcError:
            return False
        return len(to_eva) == 2

    await eventually(eva_seen, what="Eva's messages and page, after every event about Luis")
    pool = notifications.infra.pool
    assert await pool.fetchval("SELECT count(*) FROM notifications WHERE recipient_id = 'c-8'") == 0
    assert await pool.fetchval("SELECT count(*) FROM contacts WHERE user_id = 'c-8'") == 0
    assert to_luis(tmp_path) == ["Pedido entregado", "¡Bienvenido a a4co!"], (
        "nothing mailed to Luis after he left"
    )
    gone = await failure(cms_stub.GetPublicProfile(cms_pb.GetPublicProfileRequest(user_id="c-8")))
    assert gone.code() == grpc.StatusCode.NOT_FOUND

    async def card_deleted() -> bool:
        try:
            await payments_stub.GetPaymentMethod(
                payments_pb.GetPaymentMethodRequest(payment_method_id=card.payment_method_id), metadata=luis
            )
        except grpc.aio.AioRpcError as error:
            info = details_of(error)[0]
            return info is not None and info.reason == "PAYMENT_METHOD_DELETED"
        return False

    await eventually(card_deleted, what="Luis's card deleted")
    listed = await payments_stub.ListPaymentMethods(payments_pb.ListPaymentMethodsRequest(), metadata=luis)
    assert list(listed.payment_methods) == []
