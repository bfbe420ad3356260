"""Serving and stopping: graceful stop keeps in-flight calls, a SIGTERM ends a service cleanly,
and every call is counted and logged."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from a4co.inventory.v1 import inventory_service_pb2 as pb
from a4co.inventory.v1 import inventory_service_pb2_grpc as pb_grpc
from services.identity.__main__ import build as identity_build
from services.platform.grpc.interceptor import MAX_CORRELATION_ID, PlatformInterceptor
from services.platform.grpc.server import GrpcServer, Registration
from services.platform.grpc.status import details_of
from services.platform.local_servers import ServerUrls, wait_until
from services.platform.logs import JsonFormatter
from services.platform.main import EXIT_BROKEN
from services.platform.runtime import Infrastructure, NatsClosedError, ServiceRunner, run_until_signalled
from tests.integration.services.harness import Keys, settings_for
from tests.support.processes import communicate, log_lines, service_process
from tests.support.rpc import inventory_server
from tests.support.waiting import eventually

SERVICE = "a4co.inventory.v1.InventoryService"
SHED = {"service": "inventory", "method": "CheckStock", "code": "RESOURCE_EXHAUSTED"}


class Slow(pb_grpc.InventoryServiceServicer):
    """CheckStock waits until the test releases it."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.inside = 0

    async def CheckStock(self, request: pb.CheckStockRequest, context: Any) -> pb.CheckStockResponse:  # noqa: N802
        self.entered.set()
        self.inside += 1
        try:
            await self.release.wait()
        finally:
            self.inside -= 1
        return pb.CheckStockResponse(all_available=True)

    async def GetStock(self, request: pb.GetStockRequest, context: Any) -> pb.GetStockResponse:  # noqa: N802
        return pb.GetStockResponse()

    async def AdjustStock(self, request: pb.AdjustStockRequest, context: Any) -> pb.AdjustStockResponse:  # noqa: N802
        return pb.AdjustStockResponse()


def slow_server(max_concurrent_rpcs: int | None = None) -> tuple[GrpcServer, Slow]:
    servicer = Slow()
    return inventory_server(servicer, max_concurrent_rpcs=max_concurrent_rpcs), servicer


async def test_a_graceful_stop_finishes_calls_in_flight_and_refuses_new_ones() -> None:
    server, servicer = slow_server()
    await server.start()
    channel = grpc.aio.insecure_channel(server.address)
    stub = pb_grpc.InventoryServiceStub(channel)
    in_flight = asyncio.ensure_future(stub.CheckStock(pb.CheckStockRequest(), timeout=10))
    await asyncio.wait_for(servicer.entered.wait(), 10)

    stopping = asyncio.create_task(server.stop(grace_s=10))
    late: Any = grpc.aio.insecure_channel(server.address).unary_unary(f"/{SERVICE}/GetStock")

    async def refused() -> bool:
        try:
            await late(b"", timeout=2)
        except grpc.aio.AioRpcError as error:
            return error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        return False  # the stop has not reached the server yet

    await eventually(refused, timeout=10, what="new calls refused while stopping")
    assert not in_flight.done(), "the call in flight is still being served"

    servicer.release.set()
    response = await in_flight
    assert response.all_available, "the call in flight completed"
    await asyncio.wait_for(stopping, 15)
    await channel.close()


async def test_calls_past_the_concurrency_limit_are_shed_at_once() -> None:
    server, servicer = slow_server(max_concurrent_rpcs=2)
    await server.start()
    channel = grpc.aio.insecure_channel(server.address)
    stub = pb_grpc.InventoryServiceStub(channel)
    held = [asyncio.ensure_future(stub.CheckStock(pb.CheckStockRequest(), timeout=30)) for _ in range(2)]
    await eventually(lambda: servicer.inside == 2, what="two calls being served")

    shed = REGISTRY.get_sample_value("a4co_grpc_server_handled_total", SHED) or 0.0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CheckStock(pb.CheckStockRequest(), timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info, _ = details_of(caught.value)
    assert info is not None
    assert (info.reason, info.domain) == ("TOO_MANY_CALLS", "inventory.a4co")
    assert REGISTRY.get_sample_value("a4co_grpc_server_handled_total", SHED) == shed + 1  # counted

    servicer.release.set()
    assert all(r.all_available for r in await asyncio.gather(*held))
    assert (await stub.CheckStock(pb.CheckStockRequest(), timeout=30)).all_available  # room again
    await channel.close()
    await server.stop(grace_s=1)


async def test_calls_are_counted_by_code(caplog: pytest.LogCaptureFixture) -> None:
    server, servicer = slow_server()
    servicer.release.set()
    await server.start()
    channel = grpc.aio.insecure_channel(server.address)
    before = (
        REGISTRY.get_sample_value(
            "a4co_grpc_server_handled_total", {"service": "inventory", "method": "CheckStock", "code": "OK"}
        )
        or 0
    )
    with caplog.at_level(logging.INFO, logger="a4co.access"):
        await pb_grpc.InventoryServiceStub(channel).CheckStock(
            pb.CheckStockRequest(), metadata=(("x-correlation-id", "corr-123"),)
        )
        after = REGISTRY.get_sample_value(
            "a4co_grpc_server_handled_total", {"service": "inventory", "method": "CheckStock", "code": "OK"}
        )
        assert after == before + 1
        # The access log hands its lines over in batches, within a tenth of a second.
        await eventually(
            lambda: any(r.name == "a4co.access" for r in caplog.records), what="the call's access line"
        )
    record = next(r for r in caplog.records if r.name == "a4co.access")
    line = json.loads(JsonFormatter("inventory").format(record))
    assert line["service"] == "inventory"
    assert line["grpc_code"] == "OK"
    assert line["correlation_id"] == "corr-123"
    assert line["rpc_method"] == f"/{SERVICE}/CheckStock"
    assert "duration_ms" in line
    await channel.close()
    await server.stop(0)


class Failing(Slow):
    """CheckStock fails as a bug would."""

    async def CheckStock(self, request: pb.CheckStockRequest, context: Any) -> pb.CheckStockResponse:  # noqa: N802
        raise RuntimeError("a secret of the server")


def handled(code: str) -> float:
    labels = {"service": "inventory", "method": "CheckStock", "code": code}
    return REGISTRY.get_sample_value("a4co_grpc_server_handled_total", labels) or 0.0


async def test_an_unexpected_error_is_internal_to_the_caller_and_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = inventory_server(Failing())
    await server.start()
    before = handled("INTERNAL")
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pb_grpc.InventoryServiceStub(channel).CheckStock(pb.CheckStockRequest(), timeout=10)
    finally:
        await server.stop(0)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (caught.value.details() or ""), "the cause is the server's own"
    info, _ = details_of(caught.value)
    assert info is not None
    assert info.reason == "INTERNAL"
    assert handled("INTERNAL") == before + 1
    (logged,) = [r for r in caplog.records if r.getMessage() == f"unexpected error in /{SERVICE}/CheckStock"]
    assert logged.exc_info is not None
    assert "a secret of the server" in str(logged.exc_info[1])


async def test_a_call_its_caller_cancels_is_counted_as_cancelled() -> None:
    server, servicer = slow_server()
    await server.start()
    before = handled("CANCELLED")
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            call = pb_grpc.InventoryServiceStub(channel).CheckStock(pb.CheckStockRequest(), timeout=30)
            await asyncio.wait_for(servicer.entered.wait(), 10)
            call.cancel()
            await eventually(lambda: servicer.inside == 0, what="the handler cancelled")
        await eventually(lambda: handled("CANCELLED") == before + 1, what="the call counted as cancelled")
    finally:
        await server.stop(0)


async def test_a_stopping_server_hands_over_the_access_lines_it_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, servicer = slow_server()
    servicer.release.set()
    server.interceptor.access_log.delay_s = 3600  # only the stop can hand the line over
    await server.start()
    caplog.set_level(logging.INFO, logger="a4co.access")
    async with grpc.aio.insecure_channel(server.address) as channel:
        await pb_grpc.InventoryServiceStub(channel).CheckStock(
            pb.CheckStockRequest(), metadata=(("x-correlation-id", "corr-kept"),)
        )
    assert server.interceptor.access_log.pending == 1
    assert not any(r.name == "a4co.access" for r in caplog.records)
    await server.stop(0)
    (record,) = [r for r in caplog.records if r.name == "a4co.access"]
    assert record.__dict__["correlation_id"] == "corr-kept"


async def test_a_callers_correlation_id_is_kept_unless_it_cannot_be_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, servicer = slow_server()
    servicer.release.set()
    server.interceptor.access_log.delay_s = 3600  # the stop hands the lines over
    await server.start()
    caplog.set_level(logging.INFO, logger="a4co.access")
    kept, too_long = "c" * MAX_CORRELATION_ID, "c" * (MAX_CORRELATION_ID + 1)
    async with grpc.aio.insecure_channel(server.address) as channel:
        for correlation in (kept, too_long):
            await pb_grpc.InventoryServiceStub(channel).CheckStock(
                pb.CheckStockRequest(), metadata=(("x-correlation-id", correlation),)
            )
    await server.stop(0)
    first, second = [r.__dict__["correlation_id"] for r in caplog.records if r.name == "a4co.access"]
    assert first == kept
    assert second != too_long
    assert len(second) == 36, "a flow of its own, with the call's id"


async def test_sigterm_stops_a_service_process_cleanly(
    urls: ServerUrls, prefix: str, keys: Keys, tmp_path: Path
) -> None:
    ready = tmp_path / "identity.ready.json"
    env = dict(
        os.environ,
        **urls.as_env(),
        A4CO_PREFIX=prefix,
        A4CO_JWT_PRIVATE_KEY_FILE=str(keys.private_file),
        A4CO_JWT_PUBLIC_KEY_FILE=str(keys.public_file),
    )
    async with service_process("identity", env, ready) as proc:
        await asyncio.to_thread(wait_until, ready.exists, "identity ready", 60)
        address = json.loads(ready.read_text())["grpc"]
        channel = grpc.aio.insecure_channel(address)
        await asyncio.wait_for(channel.channel_ready(), 10)

        proc.send_signal(signal.SIGTERM)
        # communicate() reads the logs while waiting, so a full pipe cannot hold the process up.
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    logged = log_lines(stderr)
    (ready_line,) = [line for line in logged if line["message"] == "ready"]
    assert ready_line["event_loop"] == "uvloop"  # decision 21
    assert any(line["message"] == "stopping" for line in logged)
    assert all(line["service"] == "identity" for line in logged)
    await channel.close()


async def test_a_service_whose_nats_connection_is_closed_under_it_stops_to_be_started_again(
    urls: ServerUrls, prefix: str, keys: Keys
) -> None:
    """nats-py never reconnects after a protocol error from the server: a service left without
    NATS would serve calls and never publish nor consume again. It stops, and exits for its
    supervisor to start it again (services/platform/main.py: EXIT_NATS_CLOSED)."""
    settings = settings_for("identity", urls, prefix, keys)
    infra = await Infrastructure.connect(settings, Path("services/identity/schema.sql").read_text())
    runner = ServiceRunner(infra, await identity_build(infra), verifier=infra.verifier(settings.public_key()))
    ready = asyncio.Event()
    running = asyncio.create_task(run_until_signalled(runner, metrics_port=None, on_ready=ready.set))
    await asyncio.wait_for(ready.wait(), 30)
    # Something on the service's connection sends a message over the server's limit.
    over = infra.nc.max_payload - 10
    await infra.nc.publish(f"{prefix}.probe", b"x" * over, headers={"probe": "y" * 20})
    with pytest.raises(NatsClosedError, match="maximum payload violation"):
        await asyncio.wait_for(running, 60)
    assert infra.nc.is_closed


# A service whose background job fails at once: identity's own parts, and a job that raises.
BROKEN_IDENTITY = """
import dataclasses
from pathlib import Path

from services.identity.__main__ import build
from services.platform.main import service_main


async def settle_accounts():
    raise RuntimeError("the job broke")


async def broken(infra):
    parts = await build(infra)
    return dataclasses.replace(parts, background=[*parts.background, settle_accounts])


service_main("identity", broken, Path("services/identity/schema.sql"))
"""


async def test_a_service_whose_background_task_fails_stops_to_be_started_again(
    urls: ServerUrls, prefix: str, keys: Keys
) -> None:
    """A task the service runs beside its calls (the outbox relay, a consumer, a background job)
    that ends with an error would leave it serving without it: the relay's events would wait in
    the outbox for good. The service logs the error with its traceback, stops, and exits with 70
    (EX_SOFTWARE) for its supervisor to start it again (services/platform/main.py: EXIT_BROKEN)."""
    env = dict(
        os.environ,
        **urls.as_env(),
        A4CO_PREFIX=prefix,
        A4CO_JWT_PRIVATE_KEY_FILE=str(keys.private_file),
        A4CO_JWT_PUBLIC_KEY_FILE=str(keys.public_file),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", BROKEN_IDENTITY, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await communicate(proc, 60)
    assert proc.returncode == EXIT_BROKEN, stderr.decode()[-2000:]
    logged = log_lines(stderr)
    [critical] = [line for line in logged if line["level"] == "critical"]
    assert critical["message"] == (
        "settle_accounts failed (RuntimeError: the job broke); stopping, to be started again"
    )
    assert critical["exception"].startswith("Traceback (most recent call last):")
    assert critical["exception"].endswith("in settle_accounts\nRuntimeError: the job broke")
    assert "stopping" not in [line["message"] for line in logged], "told why, not 'stopping'"


async def test_a_stopping_service_does_not_count_its_tasks_ending_as_failures(
    urls: ServerUrls, prefix: str, keys: Keys
) -> None:
    """A task that ends with an error while the service stops (a job interrupted mid-statement,
    say) is part of the stop, not a failure: SIGTERM's stop ends normally."""
    settings = settings_for("identity", urls, prefix, keys)
    infra = await Infrastructure.connect(settings, Path("services/identity/schema.sql").read_text())
    stopping = asyncio.Event()

    async def fails_once_stopped() -> None:
        await stopping.wait()
        raise RuntimeError("interrupted by the stop")

    parts = await identity_build(infra)
    parts = dataclasses.replace(parts, background=[*parts.background, fails_once_stopped])
    runner = ServiceRunner(infra, parts, verifier=infra.verifier(settings.public_key()))
    await runner.start()
    stop = asyncio.create_task(runner.stop())
    stopping.set()
    await asyncio.wait_for(stop, 60)
    await infra.close()
    assert not runner.broken.is_set()
    assert runner.broken_by == ""


async def test_a_service_runs_on_asyncios_loop_when_asked_and_refuses_an_unknown_one(
    urls: ServerUrls, prefix: str, keys: Keys, tmp_path: Path
) -> None:
    env = dict(
        os.environ,
        **urls.as_env(),
        A4CO_PREFIX=prefix,
        A4CO_JWT_PRIVATE_KEY_FILE=str(keys.private_file),
        A4CO_JWT_PUBLIC_KEY_FILE=str(keys.public_file),
    )
    ready = tmp_path / "identity.ready.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.identity", "--ready-file", str(ready),
        env=dict(env, A4CO_EVENT_LOOP="asyncio"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await asyncio.to_thread(wait_until, ready.exists, "identity ready", 60)
        assert json.loads(ready.read_text())["event_loop"] == "asyncio"
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)

    refused = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.identity", env=dict(env, A4CO_EVENT_LOOP="trio"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(refused.communicate(), 30)
    assert refused.returncode == 1
    assert "A4CO_EVENT_LOOP must be uvloop or asyncio, not 'trio'" in stderr.decode()
    assert "never awaited" not in stderr.decode()


async def test_a_servicer_registered_only_generically_is_refused() -> None:
    """Its methods could not be wrapped, so they would skip authentication: no server starts.

    A coroutine so that the server is made on a running loop: a test that ran `asyncio.run`
    before it leaves the thread without a current loop."""
    servicer = Slow()
    interceptor = PlatformInterceptor(
        service="inventory", domain="inventory.a4co", policies={}, verifier=None
    )

    def generic_only(server: grpc.aio.Server) -> None:
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "CheckStock": grpc.unary_unary_rpc_method_handler(servicer.CheckStock)
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    with pytest.raises(ValueError, match="registers only generic handlers"):
        GrpcServer([Registration(SERVICE, generic_only)], interceptor)
