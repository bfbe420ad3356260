"""Health follows the dependencies: NOT_SERVING while PostgreSQL is down, SERVING again after; a call
that needs PostgreSQL meanwhile is answered UNAVAILABLE."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from a4co.inventory.v1 import inventory_service_pb2 as pb
from a4co.inventory.v1 import inventory_service_pb2_grpc as pb_grpc
from services.inventory.__main__ import build
from services.platform.grpc.status import details_of
from services.platform.local_servers import LocalServers, ServerUrls
from services.platform.resilience import BreakerState
from tests.integration.services.harness import Keys, running_service, settings_for
from tests.support.servers import stoppable, stopped
from tests.support.stalling_proxy import StallingProxy
from tests.support.waiting import eventually

SERVICE = "a4co.inventory.v1.InventoryService"
UP = {"service": "inventory", "dependency": "redis"}
CIRCUIT = {"peer": "redis"}


async def test_health_flips_with_the_database(
    urls: ServerUrls, prefix: str, keys: Keys, local_servers: LocalServers
) -> None:
    postgres = stoppable(local_servers, "postgres")
    settings = settings_for("inventory", urls, prefix, keys)
    async with running_service("inventory", build, Path("services/inventory/schema.sql"), settings) as svc:
        health: Any = health_pb2_grpc.HealthStub(svc.channel)  # the stub package types Check loosely

        async def status(name: str = SERVICE) -> int:
            response = await health.Check(health_pb2.HealthCheckRequest(service=name))
            return int(response.status)

        assert await status() == health_pb2.HealthCheckResponse.SERVING
        with stopped(postgres):
            await eventually(
                lambda: _is(status(), health_pb2.HealthCheckResponse.NOT_SERVING),
                timeout=20,
                what="NOT_SERVING",
            )
            assert await status("") == health_pb2.HealthCheckResponse.NOT_SERVING, "the server as a whole too"
            assert "postgres" in svc.runner.server.monitor.failing
            # Not in Redis: read from PostgreSQL, whose Unix socket is gone (FileNotFoundError).
            check = pb.CheckStockRequest(lines=[pb.StockRequestLine(product_id="p-uncached", quantity=1)])
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pb_grpc.InventoryServiceStub(svc.channel).CheckStock(check, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
            assert details_of(caught.value)[0].reason == "DEPENDENCY_UNAVAILABLE"  # type: ignore[union-attr]
        await eventually(
            lambda: _is(status(), health_pb2.HealthCheckResponse.SERVING), timeout=30, what="SERVING again"
        )


async def _is(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc,no-any-return]


async def test_a_service_serves_on_while_redis_is_down_and_exports_it(
    urls: ServerUrls, prefix: str, keys: Keys, local_servers: LocalServers
) -> None:
    """Redis is not essential (decisions 33 and 34): health stays SERVING, the outage is exported,
    and CheckStock answers from PostgreSQL."""
    redis = stoppable(local_servers, "redis")
    settings = settings_for("inventory", urls, prefix, keys)
    async with running_service("inventory", build, Path("services/inventory/schema.sql"), settings) as svc:
        health: Any = health_pb2_grpc.HealthStub(svc.channel)
        monitor = svc.runner.server.monitor
        with stopped(redis):
            await eventually(lambda: "redis" in monitor.failing, timeout=20, what="Redis seen down")
            response = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
            assert response.status == health_pb2.HealthCheckResponse.SERVING
            assert REGISTRY.get_sample_value("a4co_dependency_up", UP) == 0
            check = pb.CheckStockRequest(lines=[pb.StockRequestLine(product_id="p-none", quantity=1)])
            line = (await pb_grpc.InventoryServiceStub(svc.channel).CheckStock(check, timeout=10)).lines[0]
            assert (line.known, line.ok) == (False, False)
        await eventually(lambda: monitor.failing == [], timeout=30, what="Redis seen up again")
        assert REGISTRY.get_sample_value("a4co_dependency_up", UP) == 1


async def test_a_stalled_redis_is_answered_around_from_postgresql(
    urls: ServerUrls, prefix: str, keys: Keys, local_servers: LocalServers
) -> None:
    """A Redis that stops answering (stalled, not stopped: connections stay open, nothing comes
    back) fails each command after REDIS_TIMEOUT_S as a Redis that is down does: CheckStock
    answers from PostgreSQL well within its caller's deadline, rather than waiting until it ends; a
    few of those timeouts open Redis's circuit, and CheckStock answers from PostgreSQL without
    asking Redis until a trial command is answered."""
    async with StallingProxy(stoppable(local_servers, "redis").port).running() as proxy:
        settings = replace(
            settings_for("inventory", urls, prefix, keys), redis_url=f"redis://127.0.0.1:{proxy.port}/0"
        )
        async with running_service(
            "inventory", build, Path("services/inventory/schema.sql"), settings
        ) as svc:
            stub = pb_grpc.InventoryServiceStub(svc.channel)
            proxy.flowing.clear()
            check = pb.CheckStockRequest(lines=[pb.StockRequestLine(product_id="p-stalled", quantity=1)])
            line = (await stub.CheckStock(check, timeout=5)).lines[0]
            assert (line.known, line.ok) == (False, False)
            monitor = svc.runner.server.monitor
            await eventually(lambda: "redis" in monitor.failing, timeout=20, what="Redis seen down")

            async def circuit_open() -> bool:  # a few more timeouts open it (decision 73)
                (await stub.CheckStock(check, timeout=5)).lines[0]
                return REGISTRY.get_sample_value("a4co_circuit_breaker_state", CIRCUIT) == BreakerState.OPEN

            await eventually(circuit_open, timeout=20, what="Redis's circuit open")
            line = (await stub.CheckStock(check, timeout=5)).lines[0]  # from PostgreSQL alone
            assert (line.known, line.ok) == (False, False)
            proxy.flowing.set()
            await eventually(lambda: monitor.failing == [], timeout=30, what="Redis seen up again")
            assert svc.infra.redis.breaker.state == BreakerState.CLOSED
