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

from typing import Any

from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError


async def next_message(pubsub: PubSub) -> dict[str, Any]:
    """The subscription's next message (a confirmation or a message), waiting as long as it takes;
    redis-py's ConnectionError once the connection is lost."""
    message: dict[str, Any] | None = await pubsub.get_message(timeout=None)
    if message is None:
        raise RedisConnectionError("the subscription's connection was lost (the read returned nothing)")
    return message
