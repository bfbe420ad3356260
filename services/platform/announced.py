"""Values read from their store, kept in memory while their changes are announced on a Redis channel.

A hot read that goes to Redis or PostgreSQL on every call (CheckStock's levels, every
authenticated call's revocation check, QuoteDelivery's workshop location) pays a round trip each
time. Instead, the writer announces each change on a channel (in the Redis step that records or
indexes it), and every process that follows the channel keeps what it read, replaced by what is
announced.

The memory is only used while the process follows the channel: before the first subscription, and
from a lost connection until the next subscription (which empties it; redis-py may also reconnect
on its own, which the new subscription's confirmation reveals), every read goes to the store. As a
last guard against an announcement lost without the connection failing, an entry is read again
from the store `ttl_s` after it was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from services.platform.pubsub import SubscriptionLog, next_message
from services.platform.resilience import Backoff

log = logging.getLogger(__name__)

V = TypeVar("V")
Versioned = TypeVar("Versioned", bound=tuple[int, object])

RESUBSCRIBE = Backoff(first_s=0.1, cap_s=5.0)


class AnnouncedMemory(Generic[V]):
    """Values by key, trusted only while the channel that announces their changes is followed."""

    def __init__(
        self,
        redis: Redis,
        channel: str,
        parse: Callable[[str], tuple[str, V]],
        *,
        supersedes: Callable[[V, V], bool] = lambda new, old: True,
        ttl_s: float = 2.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self.channel = channel
        self._parse = parse
        self._supersedes = supersedes
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        # key -> (value, written at), oldest write first.
        self._entries: dict[str, tuple[V, float]] = {}
        self.following = False
        self.subscriptions = 0
        self._pubsub: PubSub | None = None  # the subscription being read, while there is one

    @staticmethod
    def versioned(
        redis: Redis,
        channel: str,
        parse: Callable[[str], tuple[str, Versioned]],
        *,
        ttl_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> AnnouncedMemory[Versioned]:
        """A memory of values that lead with their version: a newer one (or the same) replaces
        what is kept, an older one announced late never does."""
        return AnnouncedMemory(
            redis, channel, parse, supersedes=lambda new, old: new[0] >= old[0], ttl_s=ttl_s, clock=clock
        )

    def get(self, key: str) -> V | None:
        """The remembered value, if it may be trusted now."""
        if not self.following:
            return None
        entry = self._entries.get(key)
        if entry is None or entry[1] < self._clock() - self._ttl_s:
            return None
        return entry[0]

    def remember(self, key: str, value: V) -> None:
        """Keep `value` unless what is remembered supersedes it (ignored while not following)."""
        if not self.following:
            return
        entry = self._entries.pop(key, None)
        if entry is not None and not self._supersedes(value, entry[0]):
            value = entry[0]
        elif entry is None and len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (value, self._clock())

    def announced(self, message: str) -> None:
        """Apply one announcement from the channel."""
        self.remember(*self._parse(message))

    def _apply(self, data: str | bytes) -> None:
        try:
            self.announced(data.decode() if isinstance(data, bytes) else data)
        except ValueError:
            # Which key it meant is unknown: forget everything rather than keep a stale value.
            log.warning("unreadable announcement on %s: %r", self.channel, data)
            self._entries.clear()

    async def follow(self, backoff: Backoff = RESUBSCRIBE) -> None:
        """Follow the channel until cancelled, subscribing again after a lost connection."""
        attempt = 0
        said = SubscriptionLog(self.channel, "reading from the store", self._clock)
        while True:
            pubsub = self._pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while True:
                    message = await next_message(pubsub)
                    if message["type"] == "subscribe":
                        # Whatever was announced while the subscription was down is unknown.
                        self._entries.clear()
                        self.following = True
                        self.subscriptions += 1
                        attempt = 0
                        said.subscribed()
                    elif message["type"] == "message":
                        self._apply(message["data"])
            except (RedisError, ConnectionError, OSError) as exc:
                attempt += 1
                said.lost(exc)
            finally:
                self._pubsub = None
                self.following = False
                self._entries.clear()
                with contextlib.suppress(Exception):
                    await asyncio.shield(pubsub.aclose())  # type: ignore[no-untyped-call]
            await asyncio.sleep(backoff.delay(attempt))
