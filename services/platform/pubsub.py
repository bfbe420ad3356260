"""Reading a Redis subscription: the next message, or an error once its connection is lost.

redis-py 8.1's blocking read (`get_message(timeout=None)`, `listen()`) has a fault: once the
kernel has ended the connection with ETIMEDOUT (its TCP_USER_TIMEOUT or its keepalive probes
unanswered: a server gone without a word, decision 76), Python raises that as TimeoutError, which
is asyncio's own since 3.11, and redis-py takes it for the read's timeout and returns None, at once
and on every read after: `listen()` loops on it inside redis-py, and a loop that reads again spins
without ever giving the event loop back. The process stops answering anything, at full CPU, and
its memory grows by gigabytes a minute (each read raises the same exception again, which keeps
every traceback). A blocking read has no timeout of its own, so here a None is the lost connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError

from services.platform.events.connection import REPEAT_S

log = logging.getLogger(__name__)


async def next_message(pubsub: PubSub) -> dict[str, Any]:
    """The subscription's next message (a confirmation or a message), waiting as long as it takes;
    redis-py's ConnectionError once the connection is lost."""
    message: dict[str, Any] | None = await pubsub.get_message(timeout=None)
    if message is None:
        raise RedisConnectionError("the subscription's connection was lost (the read returned nothing)")
    return message


class SubscriptionLog:
    """What a subscription's loop says while it is lost: a WARNING when it is lost, then one every
    REPEAT_S while the attempts to subscribe again fail (each at DEBUG), and an INFO once subscribed
    again, with how long it was lost and how many attempts failed, as the NATS connection says
    (a Redis that stays away would otherwise have each listener of each process say so at every
    attempt, every 5 s)."""

    def __init__(self, name: str, meanwhile: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name  # what is subscribed to
        self.meanwhile = meanwhile  # what the process does until it is subscribed again
        self.clock = clock
        self.lost_since: float | None = None
        self.said_at = 0.0
        self.attempts = 0  # failed since the subscription was lost

    def lost(self, exc: BaseException) -> None:
        """The subscription was lost, or an attempt to subscribe again failed, with `exc`."""
        now = self.clock()
        if self.lost_since is None:
            self.lost_since, self.said_at, self.attempts = now, now, 0
            log.warning("lost %s (%s); %s until subscribed again", self.name, exc, self.meanwhile)
            return
        self.attempts += 1
        if now - self.said_at >= REPEAT_S:
            self.said_at = now
            log.warning(
                "%s still lost after %.0f s (%d attempts), the last: %s",
                self.name,
                now - self.lost_since,
                self.attempts,
                exc,
            )
        else:
            log.debug("%s: %s", self.name, exc)

    def subscribed(self) -> None:
        """Redis confirmed the subscription."""
        if self.lost_since is not None:
            log.info(
                "subscribed again to %s after %.1f s lost (%d attempts failed)",
                self.name,
                self.clock() - self.lost_since,
                self.attempts,
            )
        self.lost_since = None
