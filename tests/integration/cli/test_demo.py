"""`a4co demo` waits out an orders service that answers "not now": it places an order again with its
request id, and asks for a placed order's state again while it polls the saga."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
import pytest

from a4co.orders.v1 import orders_service_pb2 as pb
from a4co.orders.v1 import orders_service_pb2_grpc as pb_grpc
from services.cli import demo
from services.platform.resilience import Backoff

META = (("authorization", "Bearer t"),)


@contextlib.asynccontextmanager
async def orders_answering(
    method: str, behaviour: Any, request: Any, response: Any
) -> AsyncIterator[pb_grpc.OrdersServiceAsyncStub]:
    """A stub of an OrdersService whose one `method` is `behaviour`."""
    handler = grpc.unary_unary_rpc_method_handler(
        behaviour, request_deserializer=request.FromString, response_serializer=response.SerializeToString
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("a4co.orders.v1.OrdersService", {method: handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.OrdersServiceStub(channel)
    finally:
        await server.stop(None)


Reply: TypeAlias = pb.OrderStatus.ValueType | grpc.StatusCode


class Scripted:
    """OrdersService's GetOrder alone, answering each order's next scripted reply: a status, or
    an error code."""

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
            order_id=request.order_id, status=reply, cancel_reason="PAYMENT_DECLINED" * cancelled
        )
        return pb.GetOrderResponse(order=order)


async def poll(script: dict[str, list[Reply]]) -> tuple[Counter[str], Scripted, int]:
    servicer = Scripted(script)
    outcomes: Counter[str] = Counter()
    advanced = 0

    def advance() -> None:
        nonlocal advanced
        advanced += 1

    async with orders_answering(
        "GetOrder", servicer.get_order, pb.GetOrderRequest, pb.GetOrderResponse
    ) as stub:
        await demo.settled(stub, [(o, META) for o in script], outcomes, advance, rounds=4)
    return outcomes, servicer, advanced


async def test_an_order_answered_unavailable_is_asked_for_again() -> None:
    unavailable, deadline = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED
    outcomes, servicer, advanced = await poll(
        {
            "o-1": [unavailable, unavailable, pb.ORDER_STATUS_CONFIRMED],
            "o-2": [deadline, pb.ORDER_STATUS_CANCELLED],
            "o-3": [pb.ORDER_STATUS_PENDING],
            "o-4": [unavailable],
        }
    )
    assert outcomes == Counter({"CONFIRMED": 1, "CANCELLED PAYMENT_DECLINED": 1, "still waiting": 2})
    assert advanced == 2
    assert servicer.asked == Counter({"o-1": 3, "o-2": 2, "o-3": 4, "o-4": 4})


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
