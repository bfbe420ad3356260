"""A PostgreSQL that stops answering (a stalled server, a network that drops its packets) is down
in the health within its check's second, and up again once it answers: asyncpg waits out a
stalled server even when its query is cancelled, and the health monitor must not wait with it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import asyncpg
from grpc_health.v1 import health, health_pb2

from services.platform.grpc.server import HealthMonitor
from services.platform.local_servers import ServerUrls
from tests.support.waiting import eventually

SERVICE = "a4co.test.v1.Test"


class StallingProxy:
    """A TCP proxy to PostgreSQL that can stop passing bytes either way, and pass them again."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.port = 0
        self._pumps: set[asyncio.Task[None]] = set()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.flowing.wait()  # a new connection is not answered either
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        for pump in (self._pump(reader, up_writer), self._pump(up_reader, writer)):
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[StallingProxy]:
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            for task in list(self._pumps):
                task.cancel()


def postgres_port(database_url: str) -> int:
    parts = urlsplit(database_url)
    return parts.port or int(parse_qs(parts.query)["port"][0])


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
