"""The stock cache's copy in memory, against a real Redis: announced changes, lost subscriptions, expiry."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from services.inventory.adapters.cache import StockCache
from services.inventory.domain import StockLevel
from tests.support.announced import following
from tests.support.waiting import eventually


@contextlib.asynccontextmanager
async def following_cache(cache: StockCache) -> AsyncIterator[StockCache]:
    async with following(cache.memory):
        yield cache


def level(product_id: str, on_hand: int, version: int) -> StockLevel:
    return StockLevel(
        product_id, "artisan-ubeda", on_hand=on_hand, reserved=0, low_stock_threshold=0, version=version
    )


async def behind_the_cache(cache: StockCache, redis: Redis, product_id: str, available: int) -> None:
    """Change a cached level in Redis without announcing it."""
    await redis.hset(cache.key(product_id), "available", available)


async def test_a_change_made_by_another_process_reaches_the_memory(redis: Redis, prefix: str) -> None:
    writer, plain = StockCache(redis, prefix), StockCache(redis, prefix)
    async with following_cache(StockCache(redis, prefix)) as reader:
        await writer.put(level("p-aceite", 10, version=1))
        assert await reader.available(["p-aceite"]) == {"p-aceite": 10}

        await writer.put(level("p-aceite", 4, version=2))

        async def announced() -> bool:
            return await reader.available(["p-aceite"]) == {"p-aceite": 4}

        await eventually(announced, what="the new level announced to the reader")
        # From now on the reader answers from memory: a change that is not announced is not seen,
        # while a cache that does not follow the channel reads Redis every time.
        await behind_the_cache(reader, redis, "p-aceite", 99)
        assert await reader.available(["p-aceite"]) == {"p-aceite": 4}
        assert await plain.available(["p-aceite"]) == {"p-aceite": 99}


async def test_a_level_read_from_redis_is_kept_in_memory(redis: Redis, prefix: str) -> None:
    await StockCache(redis, prefix).put(level("p-aceituna", 12, version=3))  # announced to nobody
    async with following_cache(StockCache(redis, prefix)) as cache:
        assert await cache.available(["p-aceituna"]) == {"p-aceituna": 12}
        await behind_the_cache(cache, redis, "p-aceituna", 1)
        assert await cache.available(["p-aceituna"]) == {"p-aceituna": 12}


async def test_a_process_sees_its_own_change_at_once(redis: Redis, prefix: str) -> None:
    async with following_cache(StockCache(redis, prefix)) as cache:
        await cache.put(level("p-esparto", 3, version=1))
        assert await cache.available(["p-esparto"]) == {"p-esparto": 3}
        await cache.put(level("p-esparto", 8, version=2))
        assert await cache.available(["p-esparto"]) == {"p-esparto": 8}


async def test_an_older_announcement_never_replaces_a_newer_level(redis: Redis, prefix: str) -> None:
    async with following_cache(StockCache(redis, prefix)) as cache:
        await cache.put(level("p-x", 7, version=5))
        cache.memory.announced("p-x 4 3")
        assert await cache.available(["p-x"]) == {"p-x": 7}
        cache.memory.announced("p-x 6 2")
        assert await cache.available(["p-x"]) == {"p-x": 2}


async def test_a_write_older_than_redis_does_not_reach_memory(redis: Redis, prefix: str) -> None:
    await StockCache(redis, prefix).put(level("p-aove", 9, version=7))  # announced to nobody
    async with following_cache(StockCache(redis, prefix)) as cache:
        assert not await cache.put(level("p-aove", 2, version=6))  # a slow reader's older level
        assert await cache.available(["p-aove"]) == {"p-aove": 9}


async def test_a_lost_subscription_forgets_what_was_in_memory(redis: Redis, prefix: str) -> None:
    async with following_cache(StockCache(redis, prefix)) as cache:
        await cache.put(level("p-miel", 5, version=1))
        assert await cache.available(["p-miel"]) == {"p-miel": 5}
        await behind_the_cache(cache, redis, "p-miel", 2)

        await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # type: ignore[no-untyped-call]
        await eventually(lambda: cache.memory.subscriptions >= 2, what="subscribed again after the kill")

        assert await cache.available(["p-miel"]) == {"p-miel": 2}


async def test_without_the_channel_every_read_goes_to_redis(redis: Redis, prefix: str) -> None:
    cache = StockCache(redis, prefix)
    await cache.put(level("p-vino", 6, version=1))
    await behind_the_cache(cache, redis, "p-vino", 1)
    assert await cache.available(["p-vino"]) == {"p-vino": 1}


async def test_an_entry_is_read_again_from_redis_after_the_local_ttl(redis: Redis, prefix: str) -> None:
    now = [1000.0]
    async with following_cache(StockCache(redis, prefix, local_ttl_s=2.0, clock=lambda: now[0])) as cache:
        await cache.put(level("p-queso", 9, version=1))
        await behind_the_cache(cache, redis, "p-queso", 0)
        now[0] += 1.9
        assert await cache.available(["p-queso"]) == {"p-queso": 9}
        now[0] += 0.2
        assert await cache.available(["p-queso"]) == {"p-queso": 0}
        assert await cache.available(["p-unknown", "p-queso"]) == {"p-queso": 0}


async def test_several_levels_are_written_in_one_round_trip_each_only_if_newer(
    redis: Redis, prefix: str
) -> None:
    await StockCache(redis, prefix).put(level("p-aove", 9, version=7))  # announced to nobody; script loaded
    writer = StockCache(redis, prefix)
    async with following_cache(StockCache(redis, prefix)) as reader:
        before = await scripts_run(redis)
        written = await writer.put_many(
            [level("p-miel", 5, version=2), level("p-aove", 2, version=6), level("p-queso", 3, version=1)]
        )
        assert await scripts_run(redis) == before + 1  # one round trip for the three
        assert written == [True, False, True]  # p-aove's version 6 is older than Redis's 7
        found = await writer.available(["p-miel", "p-aove", "p-queso"])
        assert found == {"p-miel": 5, "p-aove": 9, "p-queso": 3}

        async def announced() -> bool:
            return await reader.available(["p-miel", "p-queso"]) == {"p-miel": 5, "p-queso": 3}

        await eventually(announced, what="both written levels announced to another process")
        await behind_the_cache(reader, redis, "p-queso", 0)
        assert await reader.available(["p-queso"]) == {"p-queso": 3}  # from the announcement, in memory
    assert await writer.put_many([]) == []


async def scripts_run(redis: Redis) -> int:
    """Scripts Redis has run so far (EVALSHA and EVAL), from its command statistics."""
    stats = await redis.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))
