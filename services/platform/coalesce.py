"""Round trips of one kind asked for while one is running, made together by the next one.

A service answering many calls at once often makes the same round trip for each: catalog reads
the rows of each search's page by their ids, payments writes each validated method. A
`Coalescer` starts the first caller's round trip on the event loop's next turn; the callers that
ask while it runs wait for the next, which reads (or writes) all of their keys with one
statement. Without load a caller waits for no one; under load the round trips per call fall as
callers queue (about five searches a round trip at 16 in flight, decision 28). Nothing is kept
between round trips, so an answer is as fresh as a look-up of the caller's own started when it
asked, or later. A write coalesced so must be one that no single row can fail, or one caller's
bad row fails the others'.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Generic, TypeVar

from prometheus_client import Histogram

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

CALLERS = Histogram(
    "a4co_coalesced_callers",
    "Callers served by each coalesced round trip (its count: the round trips), by kind of round trip.",
    ["kind"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)


class Coalescer(Generic[K, V]):
    """Runs `fetch` for the keys of every caller waiting, one round trip at a time.

    `fetch` gets distinct keys (at most `max_keys`, unless one caller asks for more) and answers
    the values of those that exist. A failed round trip fails the callers it was for, and the
    next one runs for those who asked since. A caller that is cancelled while it waits is left
    out of its round trip, or spares it if no one else is waiting.
    """

    def __init__(
        self, kind: str, fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]], *, max_keys: int = 2000
    ) -> None:
        self.fetch = fetch
        self.max_keys = max_keys
        self._callers = CALLERS.labels(kind)
        self._waiting: list[tuple[Sequence[K], asyncio.Future[Mapping[K, V]]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def get(self, keys: Sequence[K]) -> Mapping[K, V]:
        """The values of `keys` that exist (a key absent from the answer has none). The answer
        may hold other callers' keys too, and is shared: read it, do not change it."""
        if not keys:
            return {}
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Mapping[K, V]] = loop.create_future()
        self._waiting.append((keys, answer))
        if self._runner is None:
            # In a context of its own: a round trip belongs to no one caller's logs.
            self._runner = loop.create_task(self._run(), context=contextvars.Context())
        return await answer

    async def put(self, items: Sequence[K]) -> None:
        """A write: returns once the round trip that wrote `items` has succeeded."""
        await self.get(items)

    async def _run(self) -> None:
        batch: list[asyncio.Future[Mapping[K, V]]] = []
        try:
            while self._waiting:
                wanted, batch = self._next_batch()
                if not batch:
                    continue
                self._callers.observe(len(batch))
                try:
                    found = await self.fetch(wanted)
                except Exception as exc:  # each caller of the round trip gets the failure
                    for answer in batch:
                        if not answer.done():
                            answer.set_exception(exc)
                    continue
                for answer in batch:
                    if not answer.done():
                        answer.set_result(found)
        finally:
            self._runner = None
            # Only when the runner itself is cancelled (the loop closing) are callers left.
            for answer in batch + [a for _, a in self._waiting]:
                answer.cancel()
            self._waiting.clear()

    def _next_batch(self) -> tuple[list[K], list[asyncio.Future[Mapping[K, V]]]]:
        """The distinct keys and the answers of the callers still waiting, oldest first, up to
        `max_keys` keys (the first caller's whatever their number)."""
        wanted: dict[K, None] = {}
        batch: list[asyncio.Future[Mapping[K, V]]] = []
        taken = 0
        for keys, answer in self._waiting:
            if batch and len(wanted) + len(keys) > self.max_keys:
                break
            taken += 1
            if answer.done():  # cancelled while waiting
                continue
            wanted.update(dict.fromkeys(keys))
            batch.append(answer)
        del self._waiting[:taken]
        return list(wanted), batch
