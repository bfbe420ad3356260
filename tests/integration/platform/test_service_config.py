"""A gRPC client that loads `proto/service-config.json` (as other teams' clients are told to) tries
a read and an idempotent write again by itself when the answer is UNAVAILABLE, at most three
times in all, within the deadline the caller set; a call that must not be repeated is tried once.

The servers here answer with the failure the test chooses: what is under test is the config as a
gRPC client library reads it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.platform.errors import UnavailableError
from services.platform.grpc.interceptor import MethodPolicy, PlatformInterceptor
from tests.support.node import node, run_node
from tests.support.waiting import eventually

CONFIG = (Path(__file__).resolve().parents[3] / "proto" / "service-config.json").read_text()


class Unavailable:
    """A method that answers UNAVAILABLE `failures` times, then OK."""

    def __init__(self, failures: int) -> None:
        self.failures, self.attempts = failures, 0

    async def handle(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        self.attempts += 1
        if self.attempts <= self.failures:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "a dependency of this service is unavailable")
        return b""


class CircuitOpen:
    """A method whose service holds its circuit to a peer open, `retry_in_s` more on the first
    attempt, then answers OK: UNAVAILABLE with reason CIRCUIT_OPEN, raised as PeerClient raises it
    and answered by the platform's interceptor, as orders answers CreateOrder while inventory is
    away."""

    def __init__(self, retry_in_s: int) -> None:
        self.retry_in_s = retry_in_s
        self.attempts: list[float] = []  # when each came, on the monotonic clock

    async def handle(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        self.attempts.append(time.monotonic())
        if len(self.attempts) == 1:
            raise UnavailableError(
                "CIRCUIT_OPEN", "circuit to inventory is open", retry_delay_s=self.retry_in_s
            )
        return b""


@asynccontextmanager
async def serving(method: str, behaviour: Unavailable | CircuitOpen) -> AsyncIterator[str]:
    """A server of `method` ("package.Service/Method") alone, and its address: one server per
    test, as retries are throttled per server. A CircuitOpen is served through the platform's
    interceptor."""
    service, name = method.split("/")
    server = grpc.aio.server()
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(behaviour.handle)
    if isinstance(behaviour, CircuitOpen):
        platform = PlatformInterceptor(
            service=service,
            domain="orders.a4co",
            policies={f"/{method}": MethodPolicy(public=True)},
            verifier=None,
        )
        handler = platform.wrap(f"/{method}", handler)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, {name: handler})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


@asynccontextmanager
async def calling(method: str, behaviour: Unavailable | CircuitOpen) -> AsyncIterator[Any]:
    """A client's callable for `method` on a channel with the service config, to its own server."""
    options = [("grpc.service_config", CONFIG), ("grpc.enable_retries", 1)]
    async with (
        serving(method, behaviour) as address,
        grpc.aio.insecure_channel(address, options=options) as channel,
    ):
        yield channel.unary_unary(f"/{method}")


async def test_a_read_is_tried_again_within_its_deadline() -> None:
    search = Unavailable(failures=1)
    async with calling("a4co.catalog.v1.CatalogService/SearchProducts", search) as call:
        assert await call(b"", timeout=2) == b""
    assert search.attempts == 2


@pytest.mark.parametrize(("failures", "attempts", "answer"), [(2, 3, "OK"), (3, 3, "UNAVAILABLE")])
async def test_an_order_is_tried_three_times_at_most(failures: int, attempts: int, answer: str) -> None:
    """CreateOrder's request_id makes the same order of every try."""
    create = Unavailable(failures)
    async with calling("a4co.orders.v1.OrdersService/CreateOrder", create) as call:
        try:
            await call(b"", timeout=5)
            code = "OK"
        except grpc.aio.AioRpcError as error:
            code = error.code().name
    assert (code, create.attempts) == (answer, attempts)


async def test_an_open_circuit_past_the_deadline_is_answered_at_once_with_when_to_try_again() -> None:
    """Retrying would only be refused again: the client is told not to (the pushback), and hears why
    and when (RetryInfo), not DEADLINE_EXCEEDED."""
    create = CircuitOpen(retry_in_s=30)
    async with calling("a4co.orders.v1.OrdersService/CreateOrder", create) as call:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(b"", timeout=5)
    assert (refused.value.code(), len(create.attempts)) == (grpc.StatusCode.UNAVAILABLE, 1)
    assert ("grpc-retry-pushback-ms", "-1") in list(refused.value.trailing_metadata() or ())
    status = rpc_status.from_call(refused.value)  # type: ignore[arg-type]
    assert status is not None
    [retry] = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    info = error_details_pb2.RetryInfo()
    retry.Unpack(info)
    assert info.retry_delay.seconds == 30


async def test_an_open_circuit_within_the_deadline_is_tried_again_when_it_says() -> None:
    """The config's own backoff would try again after about a second (grpcio: 1 s, ± 20 %),
    before the circuit lets a call through: the pushback has the client wait what it was told."""
    create = CircuitOpen(retry_in_s=3)
    async with calling("a4co.orders.v1.OrdersService/CreateOrder", create) as call:
        assert await call(b"", timeout=10) == b""
    first, second = create.attempts
    assert second - first >= 3.0


async def test_calls_take_turns_over_the_replicas_a_name_resolves_to() -> None:
    """The config's `round_robin`: two replicas behind one target each get calls, where gRPC's
    default (pick_first) would send every one to the first."""
    method = "a4co.catalog.v1.CatalogService/SearchProducts"
    replicas = [Unavailable(failures=0), Unavailable(failures=0)]
    options = [("grpc.service_config", CONFIG), ("grpc.enable_retries", 1)]
    async with (
        serving(method, replicas[0]) as first,
        serving(method, replicas[1]) as second,
        grpc.aio.insecure_channel(f"ipv4:{first},{second}", options=options) as channel,
    ):
        call: Any = channel.unary_unary(f"/{method}")

        async def both_served() -> bool:
            await call(b"", timeout=2)
            return all(replica.attempts for replica in replicas)

        await eventually(both_served, what="a call served by each replica")


async def test_a_refresh_is_tried_once() -> None:
    """A refresh token used twice ends the whole session: a client never repeats one by itself."""
    refresh = Unavailable(failures=1)
    async with calling("a4co.identity.v1.IdentityService/RefreshToken", refresh) as call:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await call(b"", timeout=5)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert refresh.attempts == 1


# grpc-js (Node.js) through clients/node/a4co.mjs, which opens every channel with the same file: the
# config must be one that another language's library accepts and follows, not grpcio alone.
NODE_CALL = """
import { call, connect, grpc } from "./a4co.mjs";
const [service, method, address] = process.argv.slice(1);
const clients = connect({ [service]: address });
try {
  await call(clients[service], method, {}, { deadlineMs: 5000 });
  console.log("OK");
} catch (error) {
  console.log(grpc.status[error.code]);
}
clients[service].close();
"""


@pytest.mark.parametrize(
    ("method", "failures", "attempts", "answer"),
    [
        ("a4co.catalog.v1.CatalogService/SearchProducts", 1, 2, "OK"),
        ("a4co.orders.v1.OrdersService/CreateOrder", 2, 3, "OK"),
        ("a4co.orders.v1.OrdersService/CreateOrder", 3, 3, "UNAVAILABLE"),
        ("a4co.identity.v1.IdentityService/RefreshToken", 1, 1, "UNAVAILABLE"),
    ],
)
async def test_grpc_js_retries_as_the_config_says(
    method: str, failures: int, attempts: int, answer: str
) -> None:
    node()
    service = method.split(".")[1]
    behaviour = Unavailable(failures)
    async with serving(method, behaviour) as address:
        code, out, err = await run_node(
            "--input-type=module", "-e", NODE_CALL, service, method.split("/")[1], address
        )
    assert code == 0, err
    assert (out.strip(), behaviour.attempts) == (answer, attempts), err


async def test_grpc_js_does_not_retry_a_circuit_open_past_its_deadline() -> None:
    node()
    create = CircuitOpen(retry_in_s=30)
    async with serving("a4co.orders.v1.OrdersService/CreateOrder", create) as address:
        code, out, err = await run_node(
            "--input-type=module", "-e", NODE_CALL, "orders", "CreateOrder", address
        )
    assert code == 0, err
    assert (out.strip(), len(create.attempts)) == ("UNAVAILABLE", 1), err
