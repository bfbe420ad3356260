"""Keys whose copy in Redis (a cache, an index) a failed write left behind PostgreSQL, and the
background job that writes them again.

A service writes its Redis copies after the commit. Should Redis fail then (restarting, a
connection lost), the committed change would not reach the copy, and nothing would write it again
until the key's TTL ended (inventory's stock levels: an hour) or ever (geo's map of workshops).
The writer marks the keys instead, and `follow` reads them again from PostgreSQL and writes them,
every second, until that works. The marks live in the process: one that dies with marks leaves
those copies as they were (geo rebuilds its index when it starts; inventory's keys end with their
TTL).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from prometheus_client import Gauge

from services.platform.resilience import every

STALE = Gauge(
    "a4co_redis_copies_stale",
    "Keys whose Redis copy a failed write left behind PostgreSQL, waiting to be written again.",
    ["copy"],
)

# Reads the given keys from PostgreSQL and writes their copies in Redis (raising if it cannot).
Rewrite = Callable[[set[str]], Awaitable[None]]


class StaleKeys:
    """The keys of one kind of copy (`copy`, such as "stock") waiting to be written again."""

    def __init__(self, copy: str) -> None:
        self.copy = copy
        self._keys: set[str] = set()
        self._gauge = STALE.labels(copy)
        self._gauge.set(0)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def mark(self, keys: Iterable[str]) -> None:
        """The copies of `keys` may be behind PostgreSQL: a write of them failed."""
        self._keys.update(keys)
        self._gauge.set(len(self._keys))

    async def rewrite(self, write: Rewrite) -> int:
        """Write the marked keys again with `write`; they stay marked if it fails. The marks are
        taken before `write` reads PostgreSQL, so a write failing meanwhile marks its keys anew.
        Returns how many keys were written."""
        keys, self._keys = self._keys, set()
        try:
            if keys:
                await write(keys)
        except BaseException:
            self._keys |= keys
            raise
        finally:
            self._gauge.set(len(self._keys))
        return len(keys)

    async def follow(self, write: Rewrite, interval_s: float = 1.0) -> None:
        """Write the marked keys again every `interval_s` seconds, for ever (a background job)."""
        await every(interval_s, lambda: self.rewrite(write), f"rewriting the stale {self.copy} copies")
