"""PeerClient against real gRPC servers: deadlines, retries of idempotent calls, the breaker."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from a4co.inventory.v1 import inventory_service_pb2 as pb
from a4co.inventory.v1 import inventory_service_pb2_grpc as pb_grpc
from services.platform.errors import UnavailableError
from services.platform.grpc.client import PeerClient, RetryPolicy, open_channel
from services.platform.grpc.deadline import caller_deadline_scope
from services.platform.grpc.interceptor import MethodPolicy, PlatformInterceptor
from services.platform.resilience import Backoff, BreakerState, CircuitBreaker
from tests.support.clock import Clock
from tests.support.waiting import eventually


class Peer(pb_grpc.InventoryServiceServicer):
    """A peer whose behaviour the test sets: fail with a code, or be slow; it notes how long each
    caller said it would wait."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail_with: grpc.StatusCode | None = None
        self.delay_s = 0.0
        self.finished = 0
        self.time_remaining: list[float | None] = []

    async def CheckStock(self, request: pb.CheckStockRequest, context: Any) -> pb.CheckStockResponse:  # noqa: N802
        self.calls += 1
        self.time_remaining.append(context.time_remaining())
        if self.delay_s:
            await asyncio.sleep(self.delay_s)  # the slow peer under test
        if self.fail_with is not None:
            await context.abort(self.fail_with, "peer trouble")
        self.finished += 1
        return pb.CheckStockResponse(all_available=True)

    async def GetStock(self, request: pb.GetStockRequest, context: Any) -> pb.GetStockResponse:  # noqa: N802
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of this test")
        raise AssertionError

    async def AdjustStock(self, request: pb.AdjustStockRequest, context: Any) -> pb.AdjustStockResponse:  # noqa: N802
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of this test")
        raise AssertionError


@pytest_asyncio.fixture
async def peer() -> AsyncIterator[tuple[Peer, str]]:
    server = grpc.aio.server()
    servicer = Peer()
    pb_grpc.add_InventoryServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(0)


def client(address: str, clock: Clock, **kwargs: Any) -> tuple[PeerClient, pb_grpc.InventoryServiceAsyncStub]:
    sleeps: list[float] = []

    async def record_sleep(delay: float) -> None:
        sleeps.append(delay)  # retries are recorded, not waited, so the test stays fast

    c = PeerClient("inventory", open_channel(address), clock=clock, sleep=record_sleep, **kwargs)
    c.sleeps = sleeps  # type: ignore[attr-defined]
    return c, pb_grpc.InventoryServiceStub(c.channel)


REQUEST = pb.CheckStockRequest(lines=[pb.StockRequestLine(product_id="p", quantity=1)])


async def five_failures(servicer: Peer, c: PeerClient, stub: pb_grpc.InventoryServiceAsyncStub) -> None:
    """Five calls the peer fails (INTERNAL): enough to open the circuit."""
    servicer.fail_with = grpc.StatusCode.INTERNAL
    for _ in range(5):
        with pytest.raises(grpc.aio.AioRpcError):
            await c.call(stub.CheckStock, REQUEST)


async def test_idempotent_calls_are_retried_with_backoff_then_fail(peer: tuple[Peer, str]) -> None:
    servicer, address = peer
    servicer.fail_with = grpc.StatusCode.UNAVAILABLE
    c, stub = client(
        address, Clock(), retry=RetryPolicy(attempts=3, backoff=Backoff(first_s=0.01, cap_s=0.02))
    )
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await c.call(stub.CheckStock, REQUEST, idempotent=True)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.calls == 3
    assert len(c.sleeps) == 2  # type: ignore[attr-defined]
    await c.close()


async def test_non_idempotent_calls_and_caller_errors_are_not_retried(peer: tuple[Peer, str]) -> None:
    servicer, address = peer
    servicer.fail_with = grpc.StatusCode.UNAVAILABLE
    c, stub = client(address, Clock())
    with pytest.raises(grpc.aio.AioRpcError):
        await c.call(stub.CheckStock, REQUEST, idempotent=False)
    assert servicer.calls == 1
    servicer.fail_with = grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError):
        await c.call(stub.CheckStock, REQUEST, idempotent=True)
    assert servicer.calls == 2
    assert state_of(c.breaker) is BreakerState.CLOSED, "a caller's mistake says nothing about the peer"
    await c.close()


async def test_five_failures_open_the_breaker_and_calls_fail_fast_until_half_open(
    peer: tuple[Peer, str], caplog: pytest.LogCaptureFixture
) -> None:
    servicer, address = peer
    clock = Clock()
    c, stub = client(address, clock)
    caplog.set_level(logging.INFO, logger="services.platform.resilience")
    await five_failures(servicer, c, stub)
    assert state_of(c.breaker) is BreakerState.OPEN
    assert [r.getMessage() for r in caplog.records] == [
        "circuit to inventory opened after 5 failures within 60 s (the last: INTERNAL: peer trouble):"
        " calls to it are refused for 30 s"
    ]
    assert REGISTRY.get_sample_value("a4co_circuit_breaker_state", {"peer": "inventory"}) == 2

    with pytest.raises(UnavailableError) as refused:
        await c.call(stub.CheckStock, REQUEST)
    assert refused.value.reason == "CIRCUIT_OPEN"
    assert refused.value.retry_delay_s == 30, "its caller is told when (RetryInfo, the pushback)"
    clock.now += 29.2
    with pytest.raises(UnavailableError) as refused:
        await c.call(stub.CheckStock, REQUEST)
    assert refused.value.retry_delay_s == 1  # 0.8 s, in whole seconds
    assert servicer.calls == 5, "an open circuit does not call the peer"

    servicer.fail_with = None
    clock.now += 0.8  # and no call comes
    assert REGISTRY.get_sample_value("a4co_circuit_breaker_state", {"peer": "inventory"}) == 1, "half-open"
    response = await c.call(stub.CheckStock, REQUEST)
    assert response.all_available
    assert state_of(c.breaker) is BreakerState.CLOSED
    assert REGISTRY.get_sample_value("a4co_circuit_breaker_state", {"peer": "inventory"}) == 0
    assert servicer.calls == 6
    assert caplog.records[-1].getMessage() == (
        "circuit to inventory closed: it answers again, 30.0 s after the circuit opened"
    )
    await c.close()


async def test_a_trial_call_its_caller_cancelled_leaves_the_next_call_to_try(peer: tuple[Peer, str]) -> None:
    """The half-open circuit's trial is cancelled (its caller went away): the next call is the
    trial, where the circuit would have refused every call from then on, waiting for the first."""
    servicer, address = peer
    clock = Clock()
    c, stub = client(address, clock)
    await five_failures(servicer, c, stub)
    clock.now += 30.0
    servicer.fail_with, servicer.delay_s = None, 30.0
    trial = asyncio.create_task(c.call(stub.CheckStock, REQUEST))
    await eventually(lambda: servicer.calls == 6, what="the trial call at the peer")
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    servicer.delay_s = 0.0
    assert (await c.call(stub.CheckStock, REQUEST)).all_available
    assert state_of(c.breaker) is BreakerState.CLOSED
    await c.close()


async def test_a_slow_peer_cannot_hold_the_caller_past_its_deadline(peer: tuple[Peer, str]) -> None:
    servicer, address = peer
    servicer.delay_s = 5.0
    c, stub = client(address, Clock(), timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await c.call(stub.CheckStock, REQUEST, idempotent=True)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < servicer.delay_s, "the caller gave up before the peer answered"
    assert servicer.finished == 0
    assert len(c.sleeps) == 0, "no retry is attempted past the deadline"  # type: ignore[attr-defined]
    await c.close()


async def test_the_peer_is_given_no_longer_than_the_served_call_s_caller_waits(
    peer: tuple[Peer, str],
) -> None:
    """Serving a call whose caller waits 0.3 s more, a call to a slow peer ends then, not at the
    client's own 10 s; and its end, before the peer has had HUNG_AFTER_S, counts nothing against
    the peer: five such do not open the circuit."""
    servicer, address = peer
    servicer.delay_s = 5.0
    c, stub = client(address, Clock(), timeout_s=10.0)
    for _ in range(5):
        with caller_deadline_scope(0.3), pytest.raises(grpc.aio.AioRpcError) as late:
            await c.call(stub.CheckStock, REQUEST, idempotent=True)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert servicer.finished == 0
    # gRPC carries a deadline as a timeout in whole units, rounded up: "under a second", not 10 s.
    assert all(left is not None and left < 1.0 for left in servicer.time_remaining), servicer.time_remaining
    assert state_of(c.breaker) is BreakerState.CLOSED, "the caller's haste is not the peer's failure"
    servicer.delay_s = 0.0
    assert (await c.call(stub.CheckStock, REQUEST)).all_available  # outside a call: its own 10 s
    assert (servicer.time_remaining[-1] or 0) > 5
    await c.close()


async def test_a_hung_peer_counts_against_its_circuit_whatever_deadline_ends_the_calls(
    peer: tuple[Peer, str],
) -> None:
    """A peer that did not answer within `hung_after_s` has failed, though the caller's own
    deadline, shorter than the client's, ended each call: five such open its circuit, and the
    sixth call is refused at once, where every call would otherwise wait its whole deadline."""
    servicer, address = peer
    servicer.delay_s = 5.0
    c, stub = client(address, Clock(), timeout_s=10.0, hung_after_s=0.2)
    for _ in range(5):
        with caller_deadline_scope(0.3), pytest.raises(grpc.aio.AioRpcError) as late:
            await c.call(stub.CheckStock, REQUEST)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert state_of(c.breaker) is BreakerState.OPEN
    with caller_deadline_scope(0.3), pytest.raises(UnavailableError) as refused:
        await c.call(stub.CheckStock, REQUEST)
    assert refused.value.reason == "CIRCUIT_OPEN"
    assert servicer.calls == 5
    await c.close()


async def test_a_hung_peer_counts_when_its_callers_are_cancelled(peer: tuple[Peer, str]) -> None:
    """The served call's handler is cancelled (gRPC does so when its deadline passes, often before
    the call to the peer ends with DEADLINE_EXCEEDED; or its caller went away): a peer that had
    `hung_after_s` without answering has failed; one cancelled sooner says nothing."""
    servicer, address = peer
    servicer.delay_s = 5.0
    c, stub = client(address, Clock(), timeout_s=10.0, hung_after_s=0.2)

    async def cancelled_after(seconds: float) -> None:
        call = asyncio.ensure_future(c.call(stub.CheckStock, REQUEST))
        done, _ = await asyncio.wait({call}, timeout=seconds)
        assert not done
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    for _ in range(5):
        await cancelled_after(0.05)
    assert state_of(c.breaker) is BreakerState.CLOSED, "cancelled before the peer had its time"
    for _ in range(5):
        await cancelled_after(0.3)
    assert state_of(c.breaker) is BreakerState.OPEN
    await c.close()


async def test_a_served_call_s_deadline_reaches_the_peers_it_calls(peer: tuple[Peer, str]) -> None:
    """Through the platform's interceptor: a call with a 2 s deadline to a service whose handler
    asks the peer; the peer is told it has under 2 s (the client's own would be 10)."""
    servicer, address = peer
    c, stub = client(address, Clock(), timeout_s=10.0)

    async def get_order(request: bytes, context: Any) -> bytes:
        await c.call(stub.CheckStock, REQUEST)
        return b""

    method = "/a4co.orders.v1.OrdersService/GetOrder"
    platform = PlatformInterceptor(
        service="orders", domain="orders.a4co", policies={method: MethodPolicy(public=True)}, verifier=None
    )
    handler = platform.wrap(method, grpc.unary_unary_rpc_method_handler(get_order))
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("a4co.orders.v1.OrdersService", {"GetOrder": handler})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            get: Any = channel.unary_unary(method)
            await get(b"", timeout=2)
    finally:
        await server.stop(None)
        await c.close()
    [left] = servicer.time_remaining
    assert left is not None
    assert left < 3.0, "the served call's 2 s, not the client's own 10"


def client_seconds() -> tuple[float, float]:
    """How many CheckStock attempts to inventory the callers' histogram holds, and their seconds."""
    labels = {"peer": "inventory", "method": "CheckStock"}
    count = REGISTRY.get_sample_value("a4co_grpc_client_handling_seconds_count", labels)
    total = REGISTRY.get_sample_value("a4co_grpc_client_handling_seconds_sum", labels)
    return count or 0.0, total or 0.0


async def test_every_attempt_is_timed_as_the_caller_saw_it(peer: tuple[Peer, str]) -> None:
    servicer, address = peer
    servicer.delay_s = 0.05
    c, stub = client(
        address, Clock(), retry=RetryPolicy(attempts=2, backoff=Backoff(first_s=0.01, cap_s=0.02))
    )
    count, total = client_seconds()
    await c.call(stub.CheckStock, REQUEST)
    servicer.fail_with = grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError):
        await c.call(stub.CheckStock, REQUEST, idempotent=True)
    after_count, after_total = client_seconds()
    assert after_count - count == 3, "one answer, then two failed attempts"
    assert after_total - total >= 3 * servicer.delay_s, "each attempt waited for the slow peer"
    await c.close()


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """The breaker's state, read fresh (a helper keeps type narrowing out of the way)."""
    return breaker.state


async def test_calls_take_turns_over_every_address_of_the_peer() -> None:
    """Two replicas of inventory behind one target: each gets calls (gRPC's default, pick_first,
    would send every one to the first)."""
    servers, replicas = [], [Peer(), Peer()]
    for replica in replicas:
        server = grpc.aio.server()
        pb_grpc.add_InventoryServiceServicer_to_server(replica, server)
        servers.append((server, server.add_insecure_port("127.0.0.1:0")))
        await server.start()
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for _, port in servers)
    c = PeerClient("inventory", open_channel(target), clock=Clock())
    stub = pb_grpc.InventoryServiceStub(c.channel)

    async def both_served() -> bool:
        await c.call(stub.CheckStock, REQUEST)
        return all(replica.calls for replica in replicas)

    try:
        await eventually(both_served, what="a call served by each replica")
    finally:
        await c.close()
        for server, _ in servers:
            await server.stop(None)
