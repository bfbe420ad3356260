"""`a4co demo` waits out an orders service that answers "not now": it places an order again with its
request id, and asks for a placed order's state again while it polls the saga. A customer's first
order spends the points their balance shows once the welcome is credited."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
import pytest

from a4co.loyalty.v1 import loyalty_service_pb2 as loyalty_pb
from a4co.loyalty.v1 import loyalty_service_pb2_grpc as loyalty_grpc
from a4co.orders.v1 import orders_service_pb2 as pb
from a4co.orders.v1 import orders_service_pb2_grpc as pb_grpc
from services.cli import demo
from services.platform.resilience import Backoff

META = (("authorization", "Bearer t"),)


@contextlib.asynccontextmanager
async def answering(
    service: str, method: str, behaviour: Any, request: Any, response: Any
) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to a server of `service` whose one `method` is `behaviour`."""
    handler = grpc.unary_unary_rpc_method_handler(
        behaviour, request_deserializer=request.FromString, response_serializer=response.SerializeToString
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {method: handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


@contextlib.asynccontextmanager
async def orders_answering(
    method: str, behaviour: Any, request: Any, response: Any
) -> AsyncIterator[pb_grpc.OrdersServiceAsyncStub]:
    """A stub of an OrdersService whose one `method` is `behaviour`."""
    async with answering("a4co.orders.v1.OrdersService", method, behaviour, request, response) as channel:
        yield pb_grpc.OrdersServiceStub(channel)


Reply: TypeAlias = pb.OrderStatus.ValueType | grpc.StatusCode


class Scripted:
    """OrdersService's GetOrder alone, answering each order's next scripted reply: a status, or
    an error code. An order whose id ends in "-points" paid 20 points."""

    def __init__(self, script: dict[str, list[Reply]]) -> None:
        self.script = script
        self.asked: Counter[str] = Counter()

    async def get_order(self, request: pb.GetOrderRequest, context: Any) -> pb.GetOrderResponse:
        replies = self.script[request.order_id]
        reply = replies[min(self.asked[request.order_id], len(replies) - 1)]
        self.asked[request.order_id] += 1
        if isinstance(reply, grpc.StatusCode):
            await context.abort(reply, "the database does not answer")
            raise AssertionError  # abort raises
        cancelled = reply == pb.ORDER_STATUS_CANCELLED
        order = pb.Order(
            order_id=request.order_id,
            status=reply,
            cancel_reason="PAYMENT_DECLINED" * cancelled,
            points_redeemed=20 * request.order_id.endswith("-points"),
        )
        return pb.GetOrderResponse(order=order)


async def poll(script: dict[str, list[Reply]]) -> tuple[Counter[str], Counter[str], Scripted, int]:
    servicer = Scripted(script)
    outcomes: Counter[str] = Counter()
    with_points: Counter[str] = Counter()
    advanced = 0

    def advance() -> None:
        nonlocal advanced
        advanced += 1

    async with orders_answering(
        "GetOrder", servicer.get_order, pb.GetOrderRequest, pb.GetOrderResponse
    ) as stub:
        await demo.settled(stub, [(o, META) for o in script], outcomes, with_points, advance, rounds=4)
    return outcomes, with_points, servicer, advanced


async def test_an_order_answered_unavailable_is_asked_for_again() -> None:
    unavailable, deadline = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED
    outcomes, with_points, servicer, advanced = await poll(
        {
            "o-1": [unavailable, unavailable, pb.ORDER_STATUS_CONFIRMED],
            "o-2": [deadline, pb.ORDER_STATUS_CANCELLED],
            "o-3": [pb.ORDER_STATUS_PENDING],
            "o-4": [unavailable],
            "o-5-points": [pb.ORDER_STATUS_CONFIRMED],
            "o-6-points": [unavailable, pb.ORDER_STATUS_CANCELLED],
        }
    )
    assert outcomes == Counter({"CONFIRMED": 2, "CANCELLED PAYMENT_DECLINED": 2, "still waiting": 2})
    assert +with_points == Counter({"CONFIRMED": 1, "CANCELLED PAYMENT_DECLINED": 1})
    assert advanced == 4
    assert servicer.asked == Counter(
        {"o-1": 3, "o-2": 2, "o-3": 4, "o-4": 4, "o-5-points": 1, "o-6-points": 2}
    )


async def test_any_other_error_while_polling_is_raised() -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await poll({"o-1": [grpc.StatusCode.PERMISSION_DENIED]})
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


class Placing:
    """OrdersService's CreateOrder alone, answering its scripted replies in turn: an error code,
    or the order (whose id is the request id it was asked with)."""

    def __init__(self, replies: list[grpc.StatusCode | None]) -> None:
        self.replies = replies
        self.request_ids: list[str] = []

    async def create_order(self, request: pb.CreateOrderRequest, context: Any) -> pb.CreateOrderResponse:
        reply = self.replies[min(len(self.request_ids), len(self.replies) - 1)]
        self.request_ids.append(request.request_id)
        if reply is not None:
            await context.abort(reply, "not now")
            raise AssertionError  # abort raises
        return pb.CreateOrderResponse(order=pb.Order(order_id=request.request_id))


async def place(replies: list[grpc.StatusCode | None]) -> tuple[tuple[pb.Order | None, str, int], Placing]:
    servicer = Placing(replies)
    create = (servicer.create_order, pb.CreateOrderRequest, pb.CreateOrderResponse)
    async with orders_answering("CreateOrder", *create) as stub:
        result = await demo.place(stub, pb.CreateOrderRequest(request_id="r-1"), META)
    return result, servicer


@pytest.fixture(autouse=True)
def quick_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "PLACING_AGAIN", Backoff(first_s=0.01, cap_s=0.01))


async def test_an_order_answered_unavailable_is_placed_again_with_the_same_request_id() -> None:
    unavailable, deadline = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED
    (order, refused, again), servicer = await place([unavailable, deadline, None])
    assert order is not None
    assert order.order_id == "r-1"
    assert (refused, again) == ("", 2)
    assert servicer.request_ids == ["r-1", "r-1", "r-1"]


async def test_a_refusal_is_not_asked_again_and_not_now_only_so_often() -> None:
    (order, refused, again), servicer = await place([grpc.StatusCode.FAILED_PRECONDITION])
    assert (order, refused, again, len(servicer.request_ids)) == (None, "FAILED_PRECONDITION", 0, 1)
    (order, refused, again), servicer = await place([grpc.StatusCode.UNAVAILABLE])
    assert (order, refused, again) == (None, "UNAVAILABLE", demo.PLACE_ATTEMPTS - 1)
    assert len(servicer.request_ids) == demo.PLACE_ATTEMPTS


async def spend(balances: list[tuple[int, int]], subtotal_cents: int) -> tuple[int, int]:
    """The points a first order spends, with a LoyaltyService answering `balances` (points,
    entries) in turn, the last one from then on; and how many times it was asked."""
    asked = 0

    async def get_balance(
        request: loyalty_pb.GetBalanceRequest, context: Any
    ) -> loyalty_pb.GetBalanceResponse:
        nonlocal asked
        asked += 1
        points, entries = balances[min(asked, len(balances)) - 1]
        return loyalty_pb.GetBalanceResponse(points=points, entry_count=entries)

    behaviour = (get_balance, loyalty_pb.GetBalanceRequest, loyalty_pb.GetBalanceResponse)
    async with answering("a4co.loyalty.v1.LoyaltyService", "GetBalance", *behaviour) as channel:
        points = await demo.points_to_spend(loyalty_grpc.LoyaltyServiceStub(channel), META, subtotal_cents)
    return points, asked


async def test_a_first_order_spends_the_balance_as_far_as_its_products_allow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(demo, "WELCOME_POLL_S", 0.01)
    assert await spend([(0, 0), (0, 0), (50, 1)], subtotal_cents=1_140) == (50, 3)  # the welcome waited for
    assert await spend([(50, 1)], subtotal_cents=100) == (20, 1)  # 20 points pay the 100 cents
    assert await spend([(-12, 3)], subtotal_cents=1_140) == (0, 1)  # a revoked balance spends nothing
    assert await spend([(0, 2)], subtotal_cents=1_140) == (0, 1)  # all spent: not waited for


async def test_a_welcome_not_credited_in_time_spends_no_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "WELCOME_POLL_S", 0.01)
    monkeypatch.setattr(demo, "WELCOME_WAIT_S", 0.1)
    points, asked = await spend([(0, 0)], subtotal_cents=1_140)
    assert points == 0
    assert asked > 1
