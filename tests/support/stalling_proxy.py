"""A TCP proxy in front of a real server (PostgreSQL, Redis) that can stop passing bytes either way
and pass them again: the server as a client sees it when it stalls (every process of it stopped
with SIGSTOP) or the network drops its packets, without stopping the tests' shared server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


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
