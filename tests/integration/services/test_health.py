"""Health follows the dependencies: NOT_SERVING while PostgreSQL is down, SERVING again after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.inventory.__main__ import build
from services.platform.local_servers import LocalServers, ServerUrls
from tests.integration.services.harness import Keys, running_service, settings_for
from tests.support.waiting import eventually

SERVICE = "a4co.inventory.v1.InventoryService"


async def test_health_flips_with_the_database(
    urls: ServerUrls, prefix: str, keys: Keys, local_servers: LocalServers
) -> None:
    if not local_servers.is_managed("postgres"):
        pytest.skip("PostgreSQL is external (A4CO_DATABASE_URL): the test cannot stop it")
    settings = settings_for("inventory", urls, prefix, keys)
    async with running_service("inventory", build, Path("services/inventory/schema.sql"), settings) as svc:
        health: Any = health_pb2_grpc.HealthStub(svc.channel)  # the stub package types Check loosely

        async def status(name: str = SERVICE) -> int:
            response = await health.Check(health_pb2.HealthCheckRequest(service=name))
            return int(response.status)

        assert await status() == health_pb2.HealthCheckResponse.SERVING
        local_servers.postgres.stop()
        try:
            await eventually(
                lambda: _is(status(), health_pb2.HealthCheckResponse.NOT_SERVING),
                timeout=20,
                what="NOT_SERVING",
            )
            assert await status("") == health_pb2.HealthCheckResponse.NOT_SERVING, "the server as a whole too"
            assert "postgres" in svc.runner.server.monitor.failing
        finally:
            local_servers.postgres.start()
        await eventually(
            lambda: _is(status(), health_pb2.HealthCheckResponse.SERVING), timeout=30, what="SERVING again"
        )


async def _is(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc,no-any-return]
