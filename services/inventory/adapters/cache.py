"""The stock cache that CheckStock answers from: Redis, with a copy in the process in front of it.

Each product is a Redis hash with the stock's `version`; a write only lands when its version is
newer than the cached one (a Lua script, atomic in Redis), so a slow reader that fills the cache
from an older database read can never overwrite a newer value written after a change.

Every write that lands is also published, in the same script, on a Redis channel. Each inventory
process follows that channel (`follow`, a background job) and keeps the levels it has read in
memory, replaced by newer versions as they are announced. The in-process copy is only used while
the process follows the channel: before the first subscription, and from a lost connection until
the next subscription (which empties it), every read goes to Redis. As a last guard against an
announcement lost without the connection failing, an entry is re-read from Redis after `local_ttl_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.inventory.domain import StockLevel
from services.platform.resilience import Backoff

log = logging.getLogger(__name__)

LOOKUPS = Counter(
    "a4co_stock_cache_lookups",
    "Products looked up by CheckStock, by where the answer came from (memory, redis, miss).",
    ["source"],
)

RESUBSCRIBE = Backoff(first_s=0.1, cap_s=5.0)

_PUT_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], 'version')
if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'available', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5] .. ' ' .. ARGV[1] .. ' ' .. ARGV[2])
return 1
"""


_GET_AVAILABLE = """
local found = {}
for i, key in ipairs(KEYS) do found[i] = redis.call('HMGET', key, 'version', 'available') end
return found
"""


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
        self._local_ttl_s = local_ttl_s
        self._clock = clock
        self._put = redis.register_script(_PUT_IF_NEWER)
        self._get = redis.register_script(_GET_AVAILABLE)
        self.channel = f"{self._prefix}a4co:inventory:stock-changed"
        # product id -> (version, available, read at); trusted only while `following`.
        self._local: dict[str, tuple[int, int, float]] = {}
        self.following = False
        self.subscriptions = 0
        self._memory, self._from_redis, self._missed = (
            LOOKUPS.labels(source) for source in ("memory", "redis", "miss")
        )

    def key(self, product_id: str) -> str:
        """The Redis key of a product."""
        return f"{self._prefix}a4co:inventory:stock:{product_id}"

    async def available(self, product_ids: list[str]) -> dict[str, int]:
        """Cached available quantities; products not in the cache are absent."""
        found: dict[str, int] = {}
        remote = product_ids
        if self.following:
            fresh_after = self._clock() - self._local_ttl_s
            remote = []
            for pid in product_ids:
                entry = self._local.get(pid)
                if entry is not None and entry[2] >= fresh_after:
                    found[pid] = entry[1]
                else:
                    remote.append(pid)
            self._memory.inc(len(found))
            if not remote:
                return found
        # One script call instead of a pipeline of HMGETs: the same single round trip, with a
        # fraction of redis-py's per-command work.
        values = await self._get(keys=[self.key(pid) for pid in remote])
        now = self._clock()
        for pid, (version, available) in zip(remote, values, strict=True):
            if version is None or available is None:
                continue
            found[pid] = int(available)
            self._remember(pid, int(version), int(available), now)
        self._from_redis.inc(len(remote))
        self._missed.inc(len(product_ids) - len(found))
        return found

    async def put(self, level: StockLevel) -> bool:
        """Cache a stock level unless a newer one is cached, and announce it; True when written."""
        written = await self._put(
            keys=[self.key(level.product_id)],
            args=[level.version, level.available, self._ttl_s, self.channel, level.product_id],
        )
        # This process sees its own change at once, whatever the channel's delay.
        self._remember(level.product_id, level.version, level.available, self._clock())
        return bool(written)

    def _remember(self, product_id: str, version: int, available: int, now: float) -> None:
        if not self.following:
            return
        entry = self._local.get(product_id)
        if entry is None or entry[0] <= version:
            self._local[product_id] = (version, available, now)

    def announced(self, message: str) -> None:
        """Apply one announcement from the channel: "<product id> <version> <available>"."""
        product_id, version, available = message.rsplit(" ", 2)
        self._remember(product_id, int(version), int(available), self._clock())

    async def follow(self, backoff: Backoff = RESUBSCRIBE) -> None:
        """Follow the channel until cancelled, re-subscribing after a lost connection."""
        attempt = 0
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    if message["type"] == "subscribe":
                        # Also after redis-py reconnected on its own: whatever was announced
                        # while the subscription was down is unknown, so forget everything.
                        self._local.clear()
                        self.following = True
                        self.subscriptions += 1
                        attempt = 0
                    elif message["type"] == "message":
                        data = message["data"]
                        self.announced(data.decode() if isinstance(data, bytes) else data)
                raise ConnectionError("the stock channel's subscription ended")
            except (RedisError, ConnectionError, OSError) as exc:
                attempt += 1
                log.warning("stock cache channel lost (%s); reading from Redis until re-subscribed", exc)
            finally:
                self.following = False
                self._local.clear()
                with contextlib.suppress(Exception):
                    await asyncio.shield(pubsub.aclose())  # type: ignore[no-untyped-call]
            await asyncio.sleep(backoff.delay(attempt))
