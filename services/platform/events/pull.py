"""JetStream pull requests over a plain NATS subscription: the consumer's fetch.

nats-py's `PullSubscription.fetch` waits for every message of a batch with `asyncio.wait_for` in a
new task named by a fresh uuid4: a tenth of the consumer's time with a no-op handler (py-spy, see
docs/performance-history.md). This puller speaks the same JetStream pull protocol (a request to
`$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>` answered on an inbox), but the way nats.go's
`Consume` does rather than nats-py's `fetch`: it keeps a standing credit of messages asked for and
tops it up, instead of asking again for every batch (docs/decisions/0014).

- The credit is twice the batch: messages asked for, or arrived and not yet taken. When no more
  than one batch of it is left, one request asks for the difference; what arrives lands in a
  buffer that `fetch` and `take` empty, oldest first.
- A request lives `expires_s`. When it ends, the server says how many of its messages it did not
  send (a 408 status with `Nats-Pending-Messages`), and they are asked for again. Should that
  status be lost (a reconnection), the credit is taken as gone once the last request's lifetime
  has passed.

nats-py's way asked twice per fetch when nothing was waiting (a `no_wait` request, then one that
waits): at the saga's rates each event cost one or two requests and their statuses besides itself.

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
PENDING_MESSAGES = "Nats-Pending-Messages"
# Statuses that end a pull request (or say nothing) without an error.
NO_MESSAGES, REQUEST_TIMEOUT, HEARTBEAT = "404", "408", "100"
NO_RESPONDERS = "503"  # nobody answers for the consumer: gone, or its leader being elected
EXPIRES_S = 1.0
# A request whose end was not reported is taken as ended this long after its lifetime.
GRACE_S = 0.05


class PullError(nats.errors.Error):
    """The server ended a pull request with an error (the consumer was deleted, for instance)."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def consumer_gone(self) -> bool:
        """Whether the durable consumer is not there: deleted while the request waited (409
        Consumer Deleted), or nobody answers for it (503, no responders), or not found (404)."""
        return self.status in ("409", "503", "404") and (self.status != "409" or "Deleted" in str(self))


class Puller:
    """Keeps a credit of messages asked for from one durable consumer of one stream."""

    def __init__(self, nc: NatsClient, stream: str, durable: str, *, expires_s: float = EXPIRES_S) -> None:
        self._nc = nc
        self._next_subject = f"{API_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._expires_s = expires_s
        self._buffer: deque[Msg] = deque()
        self._asked = 0  # asked for and neither arrived nor reported as not coming
        self._open_until = 0.0  # loop time after which no request of ours can be open
        self._error: tuple[str, str] | None = None  # (status, status and description)
        self._arrived = asyncio.Event()
        self._sub: Subscription | None = None
        self.requests = 0  # pull requests sent, for tests

    async def start(self) -> None:
        """Subscribe to the inbox the server answers on."""
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_message)

    async def stop(self) -> None:
        """Unsubscribe; messages not taken yet are redelivered by the server after ack_wait."""
        if self._sub is not None and not self._nc.is_closed and not self._nc.is_draining:
            await self._sub.unsubscribe()
        self._sub = None

    @property
    def pending(self) -> int:
        """Messages that arrived and were not taken yet."""
        return len(self._buffer)

    @property
    def buffered(self) -> tuple[Msg, ...]:
        """The messages that arrived and were not taken yet, oldest first, left in place."""
        return tuple(self._buffer)

    async def _on_message(self, msg: Msg) -> None:
        headers = msg.headers
        status = headers.get(STATUS) if headers else None
        if status is None:
            self._buffer.append(msg)
            if self._asked:
                self._asked -= 1
        elif status == HEARTBEAT:
            return
        else:
            assert headers is not None
            not_sent = headers.get(PENDING_MESSAGES)
            if not_sent is not None and not_sent.isdigit():
                self._asked = max(self._asked - int(not_sent), 0)
            if status not in (NO_MESSAGES, REQUEST_TIMEOUT):
                # The request is over, and others may be too (a deleted consumer): start afresh.
                # One line: nats-py leaves the status line's other headers in the description
                # when it is empty ("503 \nNats-Subject: …" for a pull nobody answered).
                said = (headers.get(DESCRIPTION) or "").split("\n", 1)[0].strip()
                if not said and status == NO_RESPONDERS:
                    said = "No Responders"
                self._error = (status, f"{status} {said}".strip())
                self._asked, self._open_until = 0, 0.0
        self._arrived.set()

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        """Up to `batch` messages, as soon as one is there; empty when none came within `timeout`
        seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            # Cleared before looking, so that whatever arrives from now on, even while a request
            # is being sent below, wakes the wait.
            self._arrived.clear()
            if self._error is not None:
                (status, error), self._error = self._error, None
                raise PullError(f"pull request on {self._next_subject} ended: {error}", status)
            if self._buffer:
                messages = self.take(batch)
                await self._top_up(batch)
                return messages
            await self._top_up(batch)
            now = loop.time()
            if now >= deadline:
                return self.take(batch)
            # Wake when the credit may have lapsed unreported, to ask again.
            wait = min(deadline, max(self._open_until + GRACE_S, now + GRACE_S)) - now
            await wait_set(self._arrived, wait)

    def take(self, batch: int) -> list[Msg]:
        """Up to `batch` messages that already arrived, without asking the server for more."""
        buffer = self._buffer
        return [buffer.popleft() for _ in range(min(batch, len(buffer)))]

    async def _top_up(self, batch: int) -> None:
        """Ask for what the credit lacks once no more than one batch of it is left."""
        now = asyncio.get_running_loop().time()
        if now >= self._open_until + GRACE_S:
            self._asked = 0  # every request has ended, reported or not
        held = self._asked + len(self._buffer)
        if held > batch:
            return
        want = 2 * batch - held
        expires = max(int(self._expires_s * 1e9), 1_000_000)
        payload = json.dumps({"batch": want, "expires": expires}).encode()
        await self._nc.publish(self._next_subject, payload, reply=self._inbox)
        self.requests += 1
        self._asked += want
        self._open_until = now + self._expires_s
