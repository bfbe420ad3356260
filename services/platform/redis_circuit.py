"""Redis behind a circuit breaker (decision 73).

A Redis that stalls (its process stopped, its packets dropped) answers nothing, and each command
waits REDIS_TIMEOUT_S before it fails and its caller answers from PostgreSQL instead (decision 33).
A call that sends several commands pays that for each, and under load its callers' deadlines
ran out first: orders' CheckStock calls were cancelled at 2 s and its circuit to inventory opened.
So the commands share a breaker: after REDIS_BREAKER_THRESHOLD timeouts within
REDIS_BREAKER_WINDOW_S, commands are refused at once for REDIS_BREAKER_RESET_S, as by a Redis that
is down, then one goes through as the trial. Only a timeout counts: a Redis that refuses
connections, or answers with an error, fails at once already.

Commands, pipelines and scripts go through the breaker; the pub/sub listeners' connections do not
(their reads block for as long as no message comes, and they connect again on their own).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from services.platform.resilience import BreakerOpenError, CircuitBreaker, exported

REDIS_BREAKER_THRESHOLD = 3
REDIS_BREAKER_WINDOW_S = 10.0
REDIS_BREAKER_RESET_S = 5.0

T = TypeVar("T")


class RedisCircuitOpenError(redis.exceptions.ConnectionError):
    """A command refused without being sent: Redis's circuit is open. A ConnectionError, so that
    every fallback for a Redis that is down (`outages.REDIS_OUTAGES`) takes it as one."""


def redis_breaker(**options: Any) -> CircuitBreaker:
    """The breaker of a process's Redis commands, exported as
    `a4co_circuit_breaker_state{peer="redis"}`; `options` (a test's clock) go to CircuitBreaker."""
    return exported(
        CircuitBreaker(
            "redis",
            threshold=REDIS_BREAKER_THRESHOLD,
            window_s=REDIS_BREAKER_WINDOW_S,
            reset_s=REDIS_BREAKER_RESET_S,
            **options,
        )
    )


async def through(breaker: CircuitBreaker, send: Callable[[], Awaitable[T]]) -> T:
    """`send()` unless `breaker` refuses it (RedisCircuitOpenError); its timeout counts against
    Redis, an answer (an error reply too) for it."""
    try:
        breaker.before_call()
    except BreakerOpenError as refused:
        raise RedisCircuitOpenError(str(refused)) from None
    try:
        result = await send()
    except redis.exceptions.TimeoutError as exc:
        breaker.record_failure(f"{type(exc).__name__}: {exc}")
        raise
    except redis.exceptions.ConnectionError as exc:
        # redis-py reports a connection's handshake that timed out as a ConnectionError
        # caused by the timeout: a new connection to a stalled Redis fails so.
        if isinstance(exc.__cause__, redis.exceptions.TimeoutError):
            breaker.record_failure(f"{type(exc).__name__}: {exc}")
        else:
            breaker.record_abandoned()
        raise
    except redis.exceptions.ResponseError:
        breaker.record_success()
        raise
    except BaseException:
        # Refused, reset, cancelled by its caller: no word on a stall, and a trial's turn passes.
        breaker.record_abandoned()
        raise
    breaker.record_success()
    return result


class GuardedRedis(Redis):
    """A client whose commands, pipelines and scripts (`register_script` sends EVALSHA as a
    command) go through `breaker`."""

    breaker: CircuitBreaker

    @classmethod
    def over(cls, pool: Any, breaker: CircuitBreaker) -> GuardedRedis:
        """A client of `pool` (closed with it), guarded by `breaker`."""
        client = cast(GuardedRedis, cls.from_pool(pool))
        client.breaker = breaker
        return client

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        send = super().execute_command
        return await through(self.breaker, lambda: send(*args, **options))  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> GuardedPipeline:
        pipe = GuardedPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.breaker = self.breaker
        return pipe


class GuardedPipeline(Pipeline):
    """A pipeline whose execution goes through `breaker`, as one command."""

    breaker: CircuitBreaker

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        send = super().execute
        return await through(self.breaker, lambda: send(raise_on_error))
