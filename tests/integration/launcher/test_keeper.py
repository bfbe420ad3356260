"""The launcher's server keeper: a server of `make run` that is killed is started again on its
port, with what it held; one that cannot start is tried again, later and later, until it can."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import nats
import pytest
from redis.asyncio import Redis

from services.launcher.keeper import ServerKeeper
from services.platform.local_servers import ManagedServer, NatsServer, PostgresServer, RedisServer
from services.platform.resilience import Backoff
from tests.support.waiting import eventually

FAST = Backoff(first_s=0.05, cap_s=0.2)


@contextlib.asynccontextmanager
async def keeping(
    server: ManagedServer, steady_s: float = 60.0
) -> AsyncIterator[tuple[ServerKeeper, list[str]]]:
    """A keeper of `server` running as a task, and the lines it shows; the server stopped after."""
    lines: list[str] = []
    keeper = ServerKeeper(
        [server],
        on_line=lambda source, line: lines.append(f"{source}: {line}"),
        backoff=FAST,
        steady_s=steady_s,
    )
    task = asyncio.create_task(keeper.run())
    try:
        yield keeper, lines
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.stop()


async def nats_write(server: ManagedServer) -> None:
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await js.add_stream(name="KEPT", subjects=["kept.>"])
    for i in range(3):
        await js.publish("kept.one", str(i).encode())
    await nc.close()


async def nats_read(server: ManagedServer) -> object:
    nc = await nats.connect(server.url)
    try:
        return (await nc.jetstream().stream_info("KEPT")).state.messages
    finally:
        await nc.close()


async def postgres_write(server: ManagedServer) -> None:
    conn = await asyncpg.connect(server.url)
    await conn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (1), (2), (3)")
    await conn.close()


async def postgres_read(server: ManagedServer) -> object:
    conn = await asyncpg.connect(server.url)
    try:
        return await conn.fetchval("SELECT count(*) FROM kept")
    finally:
        await conn.close()


async def redis_write(server: ManagedServer) -> None:
    client = Redis.from_url(server.url)
    await client.rpush("kept", 1, 2, 3)
    await client.aclose()


async def redis_read(server: ManagedServer) -> object:
    client = Redis.from_url(server.url)
    try:
        return await client.llen("kept")
    finally:
        await client.aclose()


Access = Callable[[ManagedServer], Awaitable[object]]
KINDS: dict[str, tuple[type[ManagedServer], Access, Access]] = {
    "nats": (NatsServer, nats_write, nats_read),
    "postgres": (PostgresServer, postgres_write, postgres_read),
    "redis": (RedisServer, redis_write, redis_read),
}


@pytest.mark.parametrize("kind", list(KINDS))
async def test_a_killed_server_is_started_again_on_its_port_with_what_it_held(
    tmp_path: Path, kind: str
) -> None:
    make, write, read = KINDS[kind]
    server = make(tmp_path / kind, durable=True)
    server.start()
    await write(server)
    killed = server.pid
    assert killed is not None
    async with keeping(server) as (keeper, lines):
        os.kill(killed, signal.SIGKILL)
        await eventually(lambda: len(lines) == 2, timeout=60, what=f"{kind} started again")
        assert server.running
        assert server.pid != killed
        again = f"supervisor: {kind} running again on port {server.port} (pid {server.pid})"
        assert await read(server) == 3
    assert keeper.restarts == {kind: 1}
    assert lines[0].startswith(f"supervisor: {kind} exited (-9); starting it again in "), lines
    assert lines[0].endswith(" s (start 1 in a row)"), lines
    assert lines[1:] == [again], lines


class Stubborn(ManagedServer):
    """A server that exits at once with 3 until `healed`, then runs until stopped."""

    name = "stubborn"
    healed = False

    @property
    def url(self) -> str:
        return str(self.data_dir / "up")

    def command(self) -> list[str]:
        if not self.healed:
            return [sys.executable, "-c", "raise SystemExit(3)"]
        up = self.data_dir / "up"
        return [
            sys.executable,
            "-c",
            f"import pathlib, signal; pathlib.Path({str(up)!r}).touch(); signal.pause()",
        ]

    def ready(self) -> bool:
        return (self.data_dir / "up").exists()


async def test_a_server_that_cannot_start_is_tried_again_until_it_can(tmp_path: Path) -> None:
    server = Stubborn(tmp_path / "stubborn", durable=False)
    async with keeping(server) as (keeper, lines):
        await eventually(lambda: keeper.restarts["stubborn"] >= 3, timeout=30, what="three tries")
        assert not server.running
        failed = [line for line in lines if "did not start again" in line]
        assert failed, lines
        assert all(
            line == "supervisor: stubborn did not start again: stubborn exited with 3:" for line in failed
        )
        assert lines[0].startswith("supervisor: stubborn is not running; starting it again in "), lines
        server.healed = True
        await eventually(lambda: server.running, timeout=30, what="the stubborn server running")
        await eventually(lambda: "running again" in lines[-1], timeout=10, what="the news")


@pytest.mark.parametrize(("steady_s", "restarts"), [(0.0, 1), (math.inf, 2)])
async def test_a_server_that_ran_steadily_starts_its_backoff_anew(
    tmp_path: Path, steady_s: float, restarts: int
) -> None:
    """A server that ran `steady_s` before it exited was not crash-looping: its next start waits
    the backoff's first delay again (the count of starts in a row begins anew), while one that
    exits sooner counts on."""
    server = Stubborn(tmp_path / "stubborn", durable=False)
    server.healed = True
    server.start()
    async with keeping(server, steady_s=steady_s) as (keeper, lines):
        for n in (1, 2):
            killed = server.pid
            assert killed is not None
            os.kill(killed, signal.SIGKILL)

            def started(times: int = n) -> bool:
                return sum("running again" in line for line in lines) == times

            await eventually(started, timeout=30, what=f"start {n}")
            assert server.pid != killed
    assert keeper.restarts == {"stubborn": restarts}
