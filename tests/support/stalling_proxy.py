"""A TCP proxy in front of a real server (PostgreSQL, Redis) that can stop passing bytes either way
and pass them again: the server as a client sees it when it stalls (every process of it stopped
with SIGSTOP) or the network drops its packets, without stopping the tests' shared server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit


def postgres_port(database_url: str) -> int:
    """The TCP port of the PostgreSQL at `database_url` (a host's, or a Unix socket's `port`)."""
    parts = urlsplit(database_url)
    return parts.port or int(parse_qs(parts.query)["port"][0])


class StallingProxy:
    """A TCP proxy to a server that can stop passing bytes either way, and pass them again."""

    def __init__(self, upstream_port: int, stall_on: bytes = b"") -> None:
        """`stall_on`: the proxy stops passing bytes, that chunk among them, once a client sends
        those bytes (a statement's text, say: the server stalls after the client has connected)."""
        self.upstream_port = upstream_port
        self.stall_on = stall_on
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.port = 0
        self.received = 0  # bytes the clients sent, passed on or held
        self._pumps: set[asyncio.Task[None]] = set()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, from_client: bool
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if from_client:
                    self.received += len(data)
                    if self.stall_on and self.stall_on in data:
                        self.flowing.clear()
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A new connection is not answered either: its pumps hold what it sends.
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        for pump in (self._pump(reader, up_writer, True), self._pump(up_reader, writer, False)):
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    @contextlib.asynccontextmanager
    async def running(self, unix_path: str = "") -> AsyncIterator[StallingProxy]:
        """Listen on a free TCP port (`port`), or on the Unix socket `unix_path` when given."""
        if unix_path:
            server = await asyncio.start_unix_server(self._accept, unix_path)
        else:
            server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            for task in list(self._pumps):
                task.cancel()
