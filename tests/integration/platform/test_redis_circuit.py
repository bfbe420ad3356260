"""Redis's circuit (decision 73): a few timeouts of a stalled Redis open it, and commands, pipelines
and scripts are then refused without being sent, as by a Redis that is down, until a trial command
is answered; a refused connection, an error reply or a cancelled trial opens nothing."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis

from services.platform.local_servers import LocalServers, ServerUrls
from services.platform.outages import REDIS_OUTAGES
from services.platform.redis_circuit import (
    REDIS_BREAKER_RESET_S,
    REDIS_BREAKER_THRESHOLD,
    GuardedRedis,
    RedisCircuitOpenError,
    redis_breaker,
)
from services.platform.resilience import BreakerState
from tests.support.clock import Clock
from tests.support.servers import stoppable
from tests.support.stalling_proxy import StallingProxy
from tests.support.waiting import eventually

TIMEOUT_S = 0.2  # the services' REDIS_TIMEOUT_S, shorter for the test


def state(client: GuardedRedis) -> BreakerState:
    return client.breaker.state


@contextlib.asynccontextmanager
async def guarded(url: str, clock: Clock) -> AsyncIterator[GuardedRedis]:
    breaker = redis_breaker(clock=clock)  # the services' breaker, on the test's clock
    pool = BlockingConnectionPool.from_url(
        url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S, decode_responses=True
    )
    client = GuardedRedis.over(pool, breaker)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.mark.parametrize("connected", [True, False], ids=["connected-before", "connecting-while-stalled"])
@pytest.mark.parametrize("over", ["tcp", "unix"])
async def test_a_stalled_redis_opens_the_circuit_and_a_trial_answered_closes_it(
    local_servers: LocalServers, redis: Redis, connected: bool, over: str, tmp_path: Path
) -> None:
    """A command on a connection made before the stall times out reading its answer; a new
    connection's handshake times out too, which redis-py raises over a Unix socket (as `make run`
    connects) as a ConnectionError caused by the timeout: each counts."""
    key = f"circuit-{uuid.uuid4().hex}"
    await redis.set(key, "1", ex=60)
    clock = Clock()
    unix_path = str(tmp_path / "redis.sock") if over == "unix" else ""
    async with StallingProxy(stoppable(local_servers, "redis").port).running(unix_path) as proxy:
        url = f"unix://{unix_path}?db=0" if unix_path else f"redis://127.0.0.1:{proxy.port}/0"
        async with guarded(url, clock) as client:
            script = client.register_script("return redis.call('GET', KEYS[1])")
            if connected:
                assert await client.get(key) == "1"
            proxy.flowing.clear()
            for _ in range(REDIS_BREAKER_THRESHOLD):
                with pytest.raises((redis_errors.TimeoutError, redis_errors.ConnectionError)) as timed_out:
                    await client.get(key)
                assert not isinstance(timed_out.value, RedisCircuitOpenError)
            assert state(client) == BreakerState.OPEN

            sent = proxy.received
            pipe = client.pipeline(transaction=True)
            pipe.get(key)
            refusals = [client.get(key), pipe.execute(), script(keys=[key])]
            for refused in refusals:
                with pytest.raises(RedisCircuitOpenError, match="circuit to redis is open") as caught:
                    await refused
                assert isinstance(caught.value, REDIS_OUTAGES), "the callers' fallbacks take it as Redis down"
            assert proxy.received == sent, "nothing was sent to the stalled Redis"

            proxy.flowing.set()
            clock.now += REDIS_BREAKER_RESET_S
            assert await client.get(key) == "1"  # the trial
            assert state(client) == BreakerState.CLOSED
            assert await script(keys=[key]) == "1"


async def test_a_refused_connection_or_an_error_reply_opens_nothing(urls: ServerUrls) -> None:
    key = f"circuit-{uuid.uuid4().hex}"
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        nobody = unused.getsockname()[1]  # bound, not listening: connections are refused
        async with guarded(f"redis://127.0.0.1:{nobody}/0", Clock()) as down:
            for _ in range(REDIS_BREAKER_THRESHOLD + 2):
                with pytest.raises(redis_errors.ConnectionError) as caught:
                    await down.get(key)
                assert not isinstance(caught.value, RedisCircuitOpenError)
            assert state(down) == BreakerState.CLOSED

    async with guarded(urls.redis_url, Clock()) as client:
        await client.set(key, "not a number", ex=60)
        for _ in range(REDIS_BREAKER_THRESHOLD + 2):
            with pytest.raises(redis_errors.ResponseError):
                await client.incr(key)
        assert state(client) == BreakerState.CLOSED


async def test_a_cancelled_trial_lets_the_next_command_be_the_trial(local_servers: LocalServers) -> None:
    key = f"circuit-{uuid.uuid4().hex}"
    clock = Clock()
    async with (
        StallingProxy(stoppable(local_servers, "redis").port).running() as proxy,
        guarded(f"redis://127.0.0.1:{proxy.port}/0", clock) as client,
    ):
        await client.set(key, "1", ex=60)
        for _ in range(REDIS_BREAKER_THRESHOLD):
            client.breaker.record_failure("a timeout")
        clock.now += REDIS_BREAKER_RESET_S
        proxy.flowing.clear()
        sent = proxy.received
        trial = asyncio.ensure_future(client.ping())
        await eventually(lambda: proxy.received > sent, what="the trial sent")
        with pytest.raises(RedisCircuitOpenError):  # one trial at a time
            await client.get(key)
        trial.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await trial
        proxy.flowing.set()
        assert await client.get(key) == "1"
        assert state(client) == BreakerState.CLOSED
