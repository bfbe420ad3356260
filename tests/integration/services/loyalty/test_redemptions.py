"""Points spent on orders, on real servers (decision 54): loyalty takes them once or refuses them,
never spends the same points twice, and gives them back once when the order is undone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest_asyncio
from google.protobuf.message import Message

from a4co.identity.events.v1 import identity_events_pb2 as identity
from a4co.loyalty.v1 import loyalty_service_pb2 as pb
from a4co.loyalty.v1 import loyalty_service_pb2_grpc as pb_grpc
from a4co.orders.events.v1 import order_events_pb2 as orders
from services.loyalty.__main__ import build
from services.loyalty.handlers import _Spend, _spend_all
from services.platform.auth import Role
from services.platform.local_servers import ServerUrls
from tests.integration.services.harness import (
    Keys,
    RunningService,
    publish_event,
    running_service,
    settings_for,
    stream_events,
    token,
)
from tests.support.waiting import eventually

SCHEMA = Path("services/loyalty/schema.sql")
CUSTOMER = "c-1"


@pytest_asyncio.fixture
async def loyalty(urls: ServerUrls, prefix: str, keys: Keys) -> AsyncIterator[RunningService]:
    async with running_service("loyalty", build, SCHEMA, settings_for("loyalty", urls, prefix, keys)) as svc:
        await welcomed(svc)  # 50 points
        yield svc


async def welcomed(svc: RunningService) -> None:
    event = identity.UserRegistered(user_id=CUSTOMER, role=identity.USER_ROLE_CUSTOMER)
    await publish_event(svc, event, CUSTOMER)
    welcome = svc.consumer("IDENTITY")
    await eventually(lambda: welcome.stats.handled == 1, what="the welcome bonus")
    assert await balance(svc) == 50


async def balance(svc: RunningService) -> int:
    return int(
        await svc.infra.pool.fetchval(
            "SELECT coalesce(sum(points), 0) FROM entries WHERE user_id = $1", CUSTOMER
        )
    )


def created(order_id: str, points: int) -> orders.OrderCreated:
    return orders.OrderCreated(order_id=order_id, customer_id=CUSTOMER, points_redeemed=points)


def undone(
    order_id: str, points: int, status: orders.OrderStatus.ValueType = orders.ORDER_STATUS_CANCELLED
) -> orders.OrderStatusChanged:
    return orders.OrderStatusChanged(
        order_id=order_id, customer_id=CUSTOMER, points_redeemed=points, status=status
    )


async def answers(svc: RunningService) -> list[tuple[str, str, int, int]]:
    """loyalty's events, oldest first: (name, order, points, balance), once its outbox is relayed."""

    async def relayed() -> bool:
        return int(await svc.infra.pool.fetchval("SELECT count(*) FROM outbox")) == 0

    await eventually(relayed, what="the outbox relayed")
    return [
        (e.definition.name, e.payload.order_id, e.payload.points, e.payload.balance)  # type: ignore[attr-defined]
        for e in await stream_events(svc, "LOYALTY")
    ]


async def statuses(svc: RunningService) -> dict[str, str]:
    rows = await svc.infra.pool.fetch("SELECT order_id, status FROM redemptions")
    return {r["order_id"]: r["status"] for r in rows}


async def test_an_order_takes_its_points_once_and_one_that_asks_too_many_is_refused(
    loyalty: RunningService,
) -> None:
    orders_in = loyalty.consumer("ORDERS")
    await publish_event(loyalty, created("o-1", 30), "o-1")
    await publish_event(loyalty, created("o-1", 30), "o-1")  # the same order again, another event id
    await publish_event(loyalty, created("o-2", 21), "o-2")  # 20 left
    await publish_event(loyalty, created("o-3", 20), "o-3")
    await eventually(lambda: orders_in.stats.handled == 4, what="the orders handled")
    assert await balance(loyalty) == 0
    assert await answers(loyalty) == [
        ("PointsRedeemed", "o-1", 30, 20),
        ("PointsRedemptionFailed", "o-2", 21, 20),
        ("PointsRedeemed", "o-3", 20, 0),
    ]
    (failed,) = [
        e for e in await stream_events(loyalty, "LOYALTY") if e.definition.name == "PointsRedemptionFailed"
    ]
    assert failed.payload.reason == "INSUFFICIENT_POINTS"  # type: ignore[attr-defined]
    assert await statuses(loyalty) == {"o-1": "redeemed", "o-2": "refused", "o-3": "redeemed"}


async def test_an_order_without_points_is_not_handled(loyalty: RunningService) -> None:
    orders_in = loyalty.consumer("ORDERS")
    await publish_event(loyalty, created("o-1", 0), "o-1")
    await publish_event(loyalty, undone("o-1", 0), "o-1")
    await publish_event(loyalty, undone("o-2", 10, orders.ORDER_STATUS_CONFIRMED), "o-2")
    await eventually(lambda: orders_in.stats.skipped == 3, what="the events skipped")
    assert orders_in.stats.handled == 0
    assert await statuses(loyalty) == {}


async def test_a_cancelled_or_returned_order_gives_its_points_back_once(
    loyalty: RunningService, keys: Keys
) -> None:
    orders_in = loyalty.consumer("ORDERS")
    await publish_event(loyalty, created("o-1", 20), "o-1")
    await publish_event(loyalty, created("o-2", 30), "o-2")
    await eventually(lambda: orders_in.stats.handled == 2, what="the orders handled")
    assert await balance(loyalty) == 0
    await publish_event(loyalty, undone("o-1", 20), "o-1")
    await publish_event(loyalty, undone("o-1", 20), "o-1")  # announced again (a late payment's refund)
    await publish_event(loyalty, undone("o-2", 30, orders.ORDER_STATUS_RETURNED), "o-2")
    await eventually(lambda: orders_in.stats.handled == 5, what="the undoings handled")
    assert await balance(loyalty) == 50
    assert await statuses(loyalty) == {"o-1": "restored", "o-2": "restored"}
    stub = pb_grpc.LoyaltyServiceStub(loyalty.channel)
    me = token(keys, CUSTOMER, Role.CUSTOMER)
    page = await stub.ListLedgerEntries(pb.ListLedgerEntriesRequest(), metadata=me)
    kinds = sorted((pb.EntryKind.Name(e.kind), e.points, e.order_id) for e in page.entries)
    assert kinds == [
        ("ENTRY_KIND_REDEMPTION", -30, "o-2"),
        ("ENTRY_KIND_REDEMPTION", -20, "o-1"),
        ("ENTRY_KIND_RESTORATION", 20, "o-1"),
        ("ENTRY_KIND_RESTORATION", 30, "o-2"),
        ("ENTRY_KIND_WELCOME", 50, ""),
    ]
    got = await stub.GetBalance(pb.GetBalanceRequest(), metadata=me)
    assert (got.points, got.lifetime_points) == (50, 50)  # points given back were not earned


async def one_by_one(svc: RunningService, *events: orders.OrderCreated | orders.OrderStatusChanged) -> None:
    """Each event handled before the next is published: in this order, in batches of their own."""
    orders_in = svc.consumer("ORDERS")
    for event in events:
        handled = orders_in.stats.handled + 1
        await publish_event(svc, event, event.order_id)
        name = type(event).__name__
        await eventually(lambda: orders_in.stats.handled == handled, what=f"{name} handled")  # noqa: B023


async def test_a_refused_order_gives_nothing_back(loyalty: RunningService) -> None:
    await one_by_one(loyalty, created("o-1", 80), undone("o-1", 80))
    assert await balance(loyalty) == 50
    assert await statuses(loyalty) == {"o-1": "refused"}


async def test_an_undoing_that_overtook_its_order_leaves_the_points_alone(loyalty: RunningService) -> None:
    await one_by_one(loyalty, undone("o-1", 20), created("o-1", 20))
    assert await balance(loyalty) == 50
    assert await statuses(loyalty) == {"o-1": "void"}
    assert await answers(loyalty) == []  # the order is cancelled: nothing to answer


@dataclass
class _Told:
    """Stands for a handler's context in a direct call of the writer: keeps what it publishes."""

    published: list[Message] = field(default_factory=list)

    async def publish(self, event: Message, *, aggregate_id: str) -> None:
        self.published.append(event)


async def test_two_transactions_never_spend_the_same_points(loyalty: RunningService) -> None:
    """Two replicas' transactions for one customer: the second waits for the first's commit, then
    sees the points spent (without the customer's lock, both read 50 and both spent 30)."""
    first_told, second_told = _Told(), _Told()

    def spend(told: _Told, order_id: str) -> list[_Spend]:
        return [_Spend(told, order_id, CUSTOMER, 30, undo=False)]  # type: ignore[arg-type]

    pool = loyalty.infra.pool
    async with pool.acquire() as first, pool.acquire() as second:
        await first.execute("BEGIN")
        await _spend_all(first, spend(first_told, "o-1"))
        await second.execute("BEGIN")
        waiting = asyncio.create_task(_spend_all(second, spend(second_told, "o-2")))
        second_pid = second.get_server_pid()

        async def blocked() -> bool:
            row = await pool.fetchrow(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", second_pid
            )
            return row is not None and row["wait_event_type"] == "Lock"

        await eventually(blocked, what="the second transaction waiting for the first")
        assert not waiting.done()
        await first.execute("COMMIT")
        await waiting
        await second.execute("COMMIT")
    assert [type(e).__name__ for e in first_told.published] == ["PointsRedeemed"]
    assert [(type(e).__name__, e.balance) for e in second_told.published] == [  # type: ignore[attr-defined]
        ("PointsRedemptionFailed", 20)
    ]
    assert await balance(loyalty) == 20
