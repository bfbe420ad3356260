"""The notifications pushed on Redis, for the streams of WatchNotifications open in this process.

Each stored notification is published on its recipient's channel once its transaction commits
(handlers.py). A process follows the channels of the users it has streams for on one Redis
connection: a user's channel is subscribed when their first stream opens, and a stream is live
once Redis has confirmed that subscription, so that whatever is stored afterwards reaches it.

Redis pub/sub keeps nothing for a subscriber that is away: a push made while the connection is down
is lost to it. So a lost connection, or a subscription that redis-py renews on its own after
reconnecting (its confirmation comes again), ends the streams it served with UNAVAILABLE; their
clients watch again from the last message they received, which is then read from PostgreSQL. A
stream that falls further behind than `backlog` messages ends too, with RESOURCE_EXHAUSTED, rather
than queueing without bound for a client that does not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from services.platform.errors import A4coError, ResourceExhaustedError, UnavailableError
from services.platform.pubsub import SubscriptionLog, next_message
from services.platform.resilience import Backoff

log = logging.getLogger(__name__)

RESUBSCRIBE = Backoff(first_s=0.1, cap_s=5.0)
BACKLOG = 100  # messages a stream may fall behind its client before it ends
PER_USER = 10  # streams of one user open at once in a process
SUBSCRIBE_TIMEOUT_S = 5.0


def _lost() -> UnavailableError:
    return UnavailableError(
        "DEPENDENCY_UNAVAILABLE", "the live notifications were interrupted; watch again from the last one"
    )


class Watch:
    """One stream's live messages, in the order they were pushed, then why they stopped."""

    def __init__(self, backlog: int) -> None:
        self._backlog = backlog
        self._pending: deque[str] = deque()
        self._ended: A4coError | None = None
        self._changed = asyncio.Event()

    def offer(self, document: str) -> None:
        """A message pushed on the channel."""
        if self._ended is not None:
            return
        if len(self._pending) >= self._backlog:
            self.end(
                ResourceExhaustedError(
                    "WATCHER_FELL_BEHIND",
                    f"the stream fell {self._backlog} messages behind; watch again from the last received",
                )
            )
            return
        self._pending.append(document)
        self._changed.set()

    def end(self, error: A4coError) -> None:
        """No more messages: once the pending ones are taken, `next` raises `error`."""
        if self._ended is None:
            self._ended = error
            self._changed.set()

    async def next(self) -> str:
        """The next message pushed; the error that ended the watch once none is left."""
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._ended is not None:
                raise self._ended
            self._changed.clear()
            await self._changed.wait()


class LiveNotifications:
    """The channels of the users watched in this process, on one subscription; see the module."""

    def __init__(
        self,
        redis: Redis,
        channel_of: Callable[[str], str],
        *,
        backlog: int = BACKLOG,
        per_user: int = PER_USER,
        subscribe_timeout_s: float = SUBSCRIBE_TIMEOUT_S,
        backoff: Backoff = RESUBSCRIBE,
    ) -> None:
        self._redis = redis
        self._channel_of = channel_of
        self._backlog = backlog
        self._per_user = per_user
        self._subscribe_timeout_s = subscribe_timeout_s
        self._backoff = backoff
        self._pubsub: PubSub | None = None
        self._watches: dict[str, set[Watch]] = {}  # channel -> its open watches
        self._confirmed: set[str] = set()  # channels whose subscription Redis confirmed
        self._waiting: dict[str, asyncio.Event] = {}  # channel -> set once confirmed
        # SUBSCRIBE and UNSUBSCRIBE are sent in the order they are decided: a user's last stream
        # closing while their next opens must not leave the channel unsubscribed.
        self._sending = asyncio.Lock()
        self._up = asyncio.Event()  # set while `following`
        # The process's own channel, never published on: it keeps the subscription open while no
        # stream is, so that the connection is there and checked when the next one comes.
        self._own = channel_of("*watching*")

    @property
    def following(self) -> bool:
        """Whether the subscription is up (and streams may open)."""
        return self._own in self._confirmed

    @contextlib.asynccontextmanager
    async def watch(self, user_id: str) -> AsyncIterator[Watch]:
        """A watch of `user_id`'s channel, live once entered; UnavailableError when Redis is not
        followed within `subscribe_timeout_s` or does not confirm the subscription in time,
        ResourceExhaustedError past `per_user` streams of the user."""
        channel = self._channel_of(user_id)
        watches = self._watches.setdefault(channel, set())
        if len(watches) >= self._per_user:
            raise ResourceExhaustedError(
                "TOO_MANY_STREAMS", f"a user may watch at most {self._per_user} streams at once"
            )
        watch = Watch(self._backlog)
        watches.add(watch)
        try:
            await self._subscribe(channel)
            yield watch
        finally:
            watch.end(_lost())
            watches.discard(watch)
            if not watches:
                del self._watches[channel]
                await self._unsubscribe(channel)

    async def _subscribe(self, channel: str) -> None:
        if not self.following:  # subscribing again after a lost connection, perhaps
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._subscribe_timeout_s):
                    await self._up.wait()
        async with self._sending:
            if channel in self._confirmed:
                return
            if not self.following or self._pubsub is None:
                raise UnavailableError("DEPENDENCY_UNAVAILABLE", "live notifications are unavailable now")
            confirmed = self._waiting.get(channel)
            if confirmed is None:
                confirmed = self._waiting[channel] = asyncio.Event()
                try:
                    await self._pubsub.subscribe(channel)
                except (RedisError, OSError) as exc:
                    self._waiting.pop(channel, None)
                    raise _lost() from exc
        try:
            async with asyncio.timeout(self._subscribe_timeout_s):
                await confirmed.wait()
        except TimeoutError:
            raise UnavailableError(
                "DEPENDENCY_UNAVAILABLE", "Redis did not confirm the subscription in time"
            ) from None
        if channel not in self._confirmed:  # the subscription was lost meanwhile
            raise _lost()

    async def _unsubscribe(self, channel: str) -> None:
        async with self._sending:
            if channel in self._watches:  # a stream of the user opened meanwhile
                return
            self._confirmed.discard(channel)
            self._waiting.pop(channel, None)
            if self._pubsub is not None and self.following:
                with contextlib.suppress(RedisError, OSError):  # a lost connection drops it anyway
                    await self._pubsub.unsubscribe(channel)

    async def follow(self) -> None:
        """Keep the subscription until cancelled, subscribing again after a lost connection."""
        attempt = 0
        said = SubscriptionLog("the live notifications' subscription", "streams end and are refused")
        while True:
            pubsub = self._pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._own)
                while True:
                    message = await next_message(pubsub)
                    if message["type"] == "subscribe":
                        attempt = 0
                        if message["channel"] == self._own:
                            said.subscribed()
                        self._confirm(message["channel"])
                    elif message["type"] == "message":
                        for watch in list(self._watches.get(message["channel"], ())):
                            watch.offer(message["data"])
            except (RedisError, ConnectionError, OSError) as exc:
                attempt += 1
                said.lost(exc)
            finally:
                self._pubsub = None
                self._end_all()
                with contextlib.suppress(Exception):
                    await asyncio.shield(pubsub.aclose())  # type: ignore[no-untyped-call]
            await asyncio.sleep(self._backoff.delay(attempt))

    def _confirm(self, channel: str) -> None:
        if channel in self._confirmed:
            # Subscribed again: redis-py reconnected on its own, and what was pushed meanwhile
            # is lost to these streams (to every stream, when it is the process's own channel;
            # which then counts as confirmed anew, below).
            log.warning("the subscription to %s was renewed; its streams end", channel)
            if channel != self._own:
                for watch in self._watches.get(channel, ()):
                    watch.end(_lost())
                return
            self._end_all()
        self._confirmed.add(channel)
        if channel == self._own:
            self._up.set()
        waiting = self._waiting.pop(channel, None)
        if waiting is not None:
            waiting.set()

    def _end_all(self) -> None:
        """The subscription is gone (or was renewed): every stream ends, every waiter gives up."""
        self._confirmed.clear()
        self._up.clear()
        for watches in self._watches.values():
            for watch in watches:
                watch.end(_lost())
        for waiting in self._waiting.values():
            waiting.set()
        self._waiting.clear()
