"""A PostgreSQL that stops answering (a stalled server, a network that drops its packets) is down
in the health within its check's second, and up again once it answers: asyncpg waits out a
stalled server even when its query is cancelled, and the health monitor must not wait with it."""

from __future__ import annotations

import asyncio

import asyncpg
from grpc_health.v1 import health, health_pb2

from services.platform.grpc.server import HealthMonitor
from services.platform.local_servers import ServerUrls
from tests.support.stalling_proxy import StallingProxy, postgres_port
from tests.support.waiting import eventually

SERVICE = "a4co.test.v1.Test"


async def test_a_stalled_database_is_down_at_once_and_up_again_once_it_answers(urls: ServerUrls) -> None:
    async with StallingProxy(postgres_port(urls.database_url)).running() as proxy:
        pool = await asyncpg.create_pool(
            f"postgresql://postgres@127.0.0.1:{proxy.port}/a4co", min_size=1, max_size=2
        )
        assert pool is not None

        async def postgres() -> bool:  # the services' own check (Infra.checks)
            return bool(await pool.fetchval("SELECT 1") == 1)

        servicer = health.aio.HealthServicer()
        monitor = HealthMonitor(servicer, [SERVICE], {"postgres": postgres})

        async def serving() -> int:
            request = health_pb2.HealthCheckRequest(service=SERVICE)
            return (await servicer.Check(request, None)).status  # type: ignore[arg-type]

        try:
            assert await monitor.check_once()
            assert await serving() == health_pb2.HealthCheckResponse.SERVING

            proxy.flowing.clear()
            for _ in range(2):  # the stalled check runs on, given up on: the next one too is down
                async with asyncio.timeout(10):
                    assert not await monitor.check_once()
                assert await serving() == health_pb2.HealthCheckResponse.NOT_SERVING

            proxy.flowing.set()
            await eventually(monitor.check_once, what="the database up again in the health")
            assert await serving() == health_pb2.HealthCheckResponse.SERVING
        finally:
            await monitor.stop()
            await pool.close()
