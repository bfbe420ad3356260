"""Redis's refusals to write raised as themselves, wherever they come from, and the sessions a
process heard ended remembered without Redis (decision 36)."""

from __future__ import annotations

from typing import Any

import pytest
import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from services.platform.auth import RedisRevocations
from services.platform.outages import REDIS_OUTAGES, run_script


class Script:
    """A registered script that fails as Redis 6 reports a script's error."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def __call__(self, keys: list[Any], args: list[Any]) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("reported", "raised"),
    [
        (
            "@user_script: 9: -OOM command not allowed when used memory > 'maxmemory'.",
            redis.exceptions.OutOfMemoryError,
        ),
        (
            "@user_script: 9: -READONLY You can't write against a read only replica.",
            redis.exceptions.ReadOnlyError,
        ),
    ],
)
async def test_a_write_a_script_had_refused_raises_as_the_refusal(
    reported: str, raised: type[Exception]
) -> None:
    with pytest.raises(raised) as caught:
        await run_script(Script(redis.exceptions.ResponseError(reported)), ["k"], [1])  # type: ignore[arg-type]
    assert isinstance(caught.value, REDIS_OUTAGES)
    assert "maxmemory" in str(caught.value) or "read only" in str(caught.value)


async def test_a_scripts_own_error_stays_what_it_is() -> None:
    wrong = redis.exceptions.ResponseError(
        "@user_script: 2: WRONGTYPE Operation against a key holding the wrong kind of value"
    )
    with pytest.raises(redis.exceptions.ResponseError) as caught:
        await run_script(Script(wrong), ["k"])  # type: ignore[arg-type]
    assert caught.value is wrong
    assert not isinstance(caught.value, REDIS_OUTAGES)


async def test_sessions_heard_ended_are_remembered_without_redis_the_latest_kept() -> None:
    # Every command fails at once: no socket, and no retry.
    nowhere = Redis(unix_socket_path="/nonexistent/redis.sock", retry=Retry(NoBackoff(), 0))
    revocations = RedisRevocations(nowhere, ended_kept=2)
    for session_id in ("s-1", "s-2", "s-3"):
        revocations._heard(session_id)  # as announced on the channel
    assert await revocations.is_revoked("s-3")
    assert await revocations.is_revoked("s-2")
    with pytest.raises(redis.exceptions.ConnectionError):  # the oldest let go: asked of Redis
        await revocations.is_revoked("s-1")
    await nowhere.aclose()
