"""JetStream pull requests over a plain NATS subscription: the consumer's fetch.

nats-py's `PullSubscription.fetch` waits for every message of a batch with `asyncio.wait_for` in a
new task named by a fresh uuid4: a tenth of the consumer's time with a no-op handler (py-spy, see
docs/performance.md). This puller speaks the same JetStream pull protocol (a request to
`$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>` answered on an inbox) and keeps what arrives in a
buffer that the next fetch empties; it is the same two-step fetch as nats-py's:

1. a `no_wait` request, answered at once with the messages available (up to the batch) and, when
   there are fewer, a status that ends the answer (404 no messages, 408 request timeout);
2. if nothing was available, a request that waits up to `timeout` and returns with the first
   message; later messages of that request stay in the buffer for the next fetch.

Messages are acknowledged through `Msg.ack()` and friends as with nats-py's own subscriptions.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from services.platform.resilience import wait_set

API_PREFIX = "$JS.API"
STATUS = "Status"
DESCRIPTION = "Description"
# Statuses that end a pull request's answer without an error.
NO_MESSAGES, REQUEST_TIMEOUT, HEARTBEAT = "404", "408", "100"


class PullError(nats.errors.Error):
    """The server ended a pull request with an error (the consumer was deleted, for instance)."""


class Puller:
    """Fetches batches of one durable consumer of one stream."""

    def __init__(self, nc: NatsClient, stream: str, durable: str) -> None:
        self._nc = nc
        self._next_subject = f"{API_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._buffer: deque[Msg] = deque()
        self._ended = False  # a status ended the answer to the latest request
        self._error: str | None = None
        self._arrived = asyncio.Event()
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Subscribe to the inbox the server answers on."""
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_message)

    async def stop(self) -> None:
        """Unsubscribe; messages not fetched yet are redelivered by the server after ack_wait."""
        if self._sub is not None and not self._nc.is_closed and not self._nc.is_draining:
            await self._sub.unsubscribe()
        self._sub = None

    async def _on_message(self, msg: Msg) -> None:
        status = (msg.headers or {}).get(STATUS)
        if status is None:
            self._buffer.append(msg)
        elif status == HEARTBEAT:
            return
        else:
            self._ended = True
            if status not in (NO_MESSAGES, REQUEST_TIMEOUT):
                self._error = f"{status} {(msg.headers or {}).get(DESCRIPTION, '')}".strip()
        self._arrived.set()

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        """Up to `batch` messages; empty when none came within `timeout` seconds."""
        if not self._buffer:
            await self._request(batch, no_wait=True, timeout=timeout)
            if not self._buffer:
                await self._request(batch, no_wait=False, timeout=timeout)
        return self.take(batch)

    def take(self, batch: int) -> list[Msg]:
        """Up to `batch` messages that already arrived, without asking the server for more."""
        return [self._buffer.popleft() for _ in range(min(batch, len(self._buffer)))]

    async def _request(self, batch: int, *, no_wait: bool, timeout: float) -> None:
        """Send one pull request and wait for its answer: the whole of it when `no_wait`, else
        its first message (or the end of the window)."""
        self._ended, self._error = False, None
        self._arrived.clear()
        request: dict[str, object] = {"batch": batch, "expires": max(int(timeout * 1e9) - 100_000, 1)}
        if no_wait:
            request["no_wait"] = True
        await self._nc.publish(self._next_subject, json.dumps(request).encode(), reply=self._inbox)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            if not await wait_set(self._arrived, remaining):
                return
            self._arrived.clear()
            if self._error is not None:
                raise PullError(f"pull request on {self._next_subject} ended: {self._error}")
            if self._ended or len(self._buffer) >= batch or (self._buffer and not no_wait):
                return
