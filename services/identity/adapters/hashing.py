"""identity's password hashing: argon2id in threads of its own, sign-ins first, and a wait that
would run too long refused at once (decision 38).

A hash takes about 0.2 s of CPU and 64 MiB, so identity runs `HASHING_AT_ONCE` at a time and the
calls beyond wait for a thread. Sign-ins (Login's check, and the hash it makes for an address
without an account) take the next free thread before any sign-up, so that sign-ups sent without
end cannot keep the customers out: before, 40 clients signing up without pause made a Login on
`make run` take 5.6 to 7.8 s. A call whose wait would be longer than `wait_s` (those waiting ahead
of it, times a hash's running mean, over the threads) is refused before any work, with a
`HashingBusyError` saying when to try again, instead of waiting out its deadline in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher as Argon2
from argon2.exceptions import InvalidHashError, VerificationError
from prometheus_client import Counter, Gauge, Histogram

from services.identity.domain import HashingBusyError

T = TypeVar("T")

# Hashes computed at once. Each takes 64 MiB (the profile's memory cost) and its four lanes keep
# the cores busy: more at once go no faster and only add memory. On asyncio's default executor
# (min(32, cores + 4) threads: 6 here), 8 sign-ups at once took identity from 72 to 457 MB.
HASHING_AT_ONCE = 2
# The longest a call waits for a hashing thread behind the calls ahead of it (A4CO_HASHING_WAIT_S).
HASHING_WAIT_S = 3.0
# A hash's time until one is measured; then the running mean of the last ones (weight 1/5 each).
FIRST_GUESS_S = 0.25
MEAN_WEIGHT = 0.2


class Purpose(enum.Enum):
    """What a hash is for; sign-ins go first."""

    SIGN_IN = "sign_in"
    SIGN_UP = "sign_up"


WAITING = Gauge(
    "a4co_identity_hashes_waiting", "Password hashes waiting for a hashing thread, by purpose.", ["purpose"]
)
REFUSED = Counter(
    "a4co_identity_hashes_refused_total",
    "Password hashes refused at once (RESOURCE_EXHAUSTED HASHING_BUSY) because the calls waiting "
    "ahead would take longer than A4CO_HASHING_WAIT_S, by purpose.",
    ["purpose"],
)
HASH_SECONDS = Histogram(
    "a4co_identity_hash_seconds",
    "Time of one password hash (argon2id) in its thread.",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0),
)


class Argon2Hasher:
    """argon2id (RFC 9106 low-memory profile) at `at_once` at a time, in threads of its own so that
    it does not block the loop; sign-ins first, and a wait past `wait_s` refused."""

    def __init__(
        self, hasher: Argon2 | None = None, at_once: int = HASHING_AT_ONCE, wait_s: float = HASHING_WAIT_S
    ) -> None:
        self._hasher = hasher or Argon2()
        self.at_once = at_once
        self.wait_s = wait_s
        self._threads = ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="argon2")
        self._free = at_once  # threads no call holds
        self._waiting: dict[Purpose, deque[asyncio.Future[None]]] = {p: deque() for p in Purpose}
        self._mean_s = FIRST_GUESS_S
        self._lock = threading.Lock()  # the running mean is updated from the hashing threads
        for purpose, queue in self._waiting.items():
            WAITING.labels(purpose.value).set_function(queue.__len__)

    @property
    def waiting(self) -> int:
        """Calls waiting for a thread."""
        return sum(map(len, self._waiting.values()))

    @property
    def mean_s(self) -> float:
        """The running mean of a hash's time, in seconds."""
        return self._mean_s

    async def hash(self, password: str, *, sign_in: bool = False) -> str:
        """A hash to store, or with `sign_in` one that spends a check's time (no account)."""
        return await self._run(Purpose.SIGN_IN if sign_in else Purpose.SIGN_UP, self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        """Whether `password` matches (a sign-in's check)."""
        try:
            return await self._run(Purpose.SIGN_IN, self._hasher.verify, password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def _run(self, purpose: Purpose, work: Callable[..., T], *args: object) -> T:
        await self._turn(purpose)
        loop = asyncio.get_running_loop()
        try:
            running: Future[T] = self._threads.submit(self._timed, work, *args)
        except BaseException:
            self._release()
            raise
        # The thread is held until its hash ends, even when the caller stops waiting for it.
        running.add_done_callback(lambda _: self._release_from(loop))
        return await asyncio.wrap_future(running)

    async def _turn(self, purpose: Purpose) -> None:
        """Take a thread, at once or after those waiting ahead; HashingBusyError if they are too
        many. Sign-ins wait behind sign-ins only, sign-ups behind everyone."""
        ahead = len(self._waiting[Purpose.SIGN_IN]) if purpose is Purpose.SIGN_IN else self.waiting
        if self._free > 0 and ahead == 0:
            self._free -= 1
            return
        wait_s = ahead * self._mean_s / self.at_once
        if wait_s > self.wait_s:
            REFUSED.labels(purpose.value).inc()
            raise HashingBusyError(wait_s)
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiting[purpose]
        queue.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # handed a thread as it was cancelled
                self._release()
            else:
                queue.remove(turn)
            raise

    def _release(self) -> None:
        """A thread is free: to the oldest sign-in waiting, else the oldest sign-up."""
        for purpose in Purpose:
            queue = self._waiting[purpose]
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)
                    return
        self._free += 1

    def _release_from(self, loop: asyncio.AbstractEventLoop) -> None:
        """`_release`, from the thread whose hash ended."""
        with contextlib.suppress(RuntimeError):  # the loop has closed: nothing waits any more
            loop.call_soon_threadsafe(self._release)

    def _timed(self, work: Callable[..., T], *args: object) -> T:
        started = time.perf_counter()
        try:
            return work(*args)
        finally:
            took = time.perf_counter() - started
            HASH_SECONDS.observe(took)
            with self._lock:
                self._mean_s += MEAN_WEIGHT * (took - self._mean_s)
