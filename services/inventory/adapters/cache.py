"""The stock cache that CheckStock answers from: Redis, with a copy in the process in front of it.

Each product is a Redis hash with the stock's `version`; a write only lands when its version is
newer than the cached one (a Lua script, atomic in Redis), so a slow reader that fills the cache
from an older database read can never overwrite a newer value written after a change.

Every write that lands is also announced, in the same script, on a Redis channel; each inventory
process that follows it (`memory.follow`, a background job) keeps the levels it has read in memory
(services/platform/announced.py), a newer version replacing an older one.

A write that fails (Redis restarting, say) marks its products `stale`: until they are written
again from PostgreSQL (`stale.follow`, a background job), this process looks them up in
PostgreSQL, not in the copy the failed write left behind (services/platform/stale.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from prometheus_client import Counter
from redis.asyncio import Redis

from services.inventory.domain import StockLevel
from services.platform.announced import AnnouncedMemory
from services.platform.outages import run_script
from services.platform.stale import StaleKeys

LOOKUPS = Counter(
    "a4co_stock_cache_lookups",
    "Products looked up by CheckStock, by where the answer came from (memory, redis, miss).",
    ["source"],
)

# KEYS: one hash per product; ARGV: the TTL, the channel, then version, available and product id
# for each key in turn. Returns 1 for each write that landed, 0 for each older than the cache's.
_PUT_IF_NEWER = """
local ttl, channel, landed = ARGV[1], ARGV[2], {}
for i, key in ipairs(KEYS) do
  local version, available, product = ARGV[3 * i], ARGV[3 * i + 1], ARGV[3 * i + 2]
  local current = redis.call('HGET', key, 'version')
  if current and tonumber(current) >= tonumber(version) then
    landed[i] = 0
  else
    redis.call('HSET', key, 'version', version, 'available', available)
    redis.call('EXPIRE', key, ttl)
    redis.call('PUBLISH', channel, product .. ' ' .. version .. ' ' .. available)
    landed[i] = 1
  end
end
return landed
"""


_GET_AVAILABLE = """
local found = {}
for i, key in ipairs(KEYS) do found[i] = redis.call('HMGET', key, 'version', 'available') end
return found
"""

Level = tuple[int, int]  # (version, available)


def parse_announcement(message: str) -> tuple[str, Level]:
    """ "<product id> <version> <available>" as announced by the write script."""
    product_id, version, available = message.rsplit(" ", 2)
    return product_id, (int(version), int(available))


class StockCache:
    """Available quantities by product, kept correct by inventory's own changes."""

    def __init__(
        self,
        redis: Redis,
        prefix: str = "",
        ttl_s: int = 3600,
        *,
        local_ttl_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._prefix = f"{prefix}:" if prefix else ""
        self._ttl_s = ttl_s
        self._put = redis.register_script(_PUT_IF_NEWER)
        self._get = redis.register_script(_GET_AVAILABLE)
        channel = f"{self._prefix}a4co:inventory:stock-changed"
        self.memory = AnnouncedMemory.versioned(
            redis, channel, parse_announcement, ttl_s=local_ttl_s, clock=clock
        )
        self._from_memory, self._from_redis, self._missed = (
            LOOKUPS.labels(source) for source in ("memory", "redis", "miss")
        )
        self.stale = StaleKeys("stock")

    def key(self, product_id: str) -> str:
        """The Redis key of a product."""
        return f"{self._prefix}a4co:inventory:stock:{product_id}"

    async def available(self, product_ids: list[str]) -> dict[str, int]:
        """Cached available quantities; products not in the cache, or whose copy may be behind
        (`stale`), are absent."""
        found: dict[str, int] = {}
        remote = []
        stale = self.stale
        for pid in product_ids:
            if stale and pid in stale:
                continue
            level = self.memory.get(pid)
            if level is None:
                remote.append(pid)
            else:
                found[pid] = level[1]
        self._from_memory.inc(len(found))
        if not remote:
            return found
        # One script call instead of a pipeline of HMGETs: the same single round trip, with a
        # fraction of redis-py's per-command work.
        values = await self._get(keys=[self.key(pid) for pid in remote])
        for pid, (version, available) in zip(remote, values, strict=True):
            if version is not None and available is not None:
                found[pid] = int(available)
                self.memory.remember(pid, (int(version), int(available)))
        self._from_redis.inc(len(remote))
        self._missed.inc(len(product_ids) - len(found))
        return found

    async def put(self, level: StockLevel) -> bool:
        """Cache a stock level unless a newer one is cached, and announce it; True when written."""
        (written,) = await self.put_many([level])
        return written

    async def put_many(self, levels: Sequence[StockLevel]) -> list[bool]:
        """`put` for several levels in one round trip to Redis; for each, whether it was written."""
        if not levels:
            return []
        args: list[str | int] = [self._ttl_s, self.memory.channel]
        for level in levels:
            args += [level.version, level.available, level.product_id]
        try:
            landed = await run_script(self._put, [self.key(level.product_id) for level in levels], args)
        except BaseException:  # whether it landed is unknown: written again from PostgreSQL
            self.stale.mark(level.product_id for level in levels)
            raise
        for level, written in zip(levels, landed, strict=True):
            if written:
                # This process sees its own change at once, whatever the channel's delay. A write
                # that did not land is older than what Redis holds: it must not reach memory either.
                self.memory.remember(level.product_id, (level.version, level.available))
        return [bool(written) for written in landed]
