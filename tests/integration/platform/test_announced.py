"""Revocations and announced memories against a real Redis: one process revokes, the others learn it."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from services.inventory.adapters.cache import StockCache
from services.platform.auth import RedisRevocations
from tests.support.announced import following
from tests.support.ended_connection import ended_by_the_kernel
from tests.support.waiting import eventually


async def test_a_revocation_reaches_a_process_that_remembered_the_session_as_valid(
    redis: Redis, prefix: str
) -> None:
    identity, service = RedisRevocations(redis, prefix), RedisRevocations(redis, prefix)
    async with following(service.memory):
        assert not await service.is_revoked("s-1")
        assert service.memory.get("s-1") is False  # answered from memory from now on

        await identity.revoke("s-1", ttl_s=60)

        await eventually(lambda: service.memory.get("s-1") is True, what="the revocation announced")
        assert await service.is_revoked("s-1")
        assert not await service.is_revoked("s-2")


async def test_the_revoking_process_refuses_the_session_at_once(redis: Redis, prefix: str) -> None:
    identity = RedisRevocations(redis, prefix)
    async with following(identity.memory):
        assert not await identity.is_revoked("s-1")
        await identity.revoke("s-1", ttl_s=60)
        assert await identity.is_revoked("s-1")


async def test_a_revocation_is_never_undone_by_an_older_answer(redis: Redis, prefix: str) -> None:
    revocations = RedisRevocations(redis, prefix)
    async with following(revocations.memory):
        await revocations.revoke("s-1", ttl_s=60)
        revocations.memory.remember("s-1", False)  # a read that started before the revocation
        assert await revocations.is_revoked("s-1")


async def test_a_process_that_does_not_follow_asks_redis_every_time(redis: Redis, prefix: str) -> None:
    service = RedisRevocations(redis, prefix)
    assert not await service.is_revoked("s-1")
    await redis.set(f"{prefix}:a4co:revoked:s-1", "1")  # written by nobody that announces it
    assert await service.is_revoked("s-1")


async def test_an_unreadable_announcement_empties_the_memory(redis: Redis, prefix: str) -> None:
    cache = StockCache(redis, prefix)
    async with following(cache.memory):
        cache.memory.remember("p-1", (1, 5))
        assert cache.memory.get("p-1") == (1, 5)
        await redis.publish(cache.memory.channel, "not an announcement")
        await eventually(lambda: cache.memory.get("p-1") is None, what="memory emptied")
        assert cache.memory.following


# A read that spins never gives the event loop back, so only pytest-timeout's signal can end it.
@pytest.mark.timeout(20)
async def test_a_connection_the_kernel_ended_is_subscribed_again(redis: Redis, prefix: str) -> None:
    """redis-py 8.1 reads such a connection as nothing, at once and for ever (services/platform/pubsub.py)."""
    service = RedisRevocations(redis, prefix)
    async with following(service.memory):
        assert await service.is_revoked("s-1") is False
        assert service.memory.get("s-1") is False
        assert service.memory._pubsub is not None
        ended_by_the_kernel(service.memory._pubsub)

        await eventually(lambda: service.memory.subscriptions == 2, what="subscribed again")
        assert service.memory.following
        assert service.memory.get("s-1") is None, "what was remembered before is forgotten"
        await RedisRevocations(redis, prefix).revoke("s-1", ttl_s=60)
        assert await service.is_revoked("s-1")
