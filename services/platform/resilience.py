"""Resilience policies shared by event consumers, the outbox relay and gRPC clients."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge

from services.platform.outages import DEPENDENCY_OUTAGES

log = logging.getLogger(__name__)

BREAKER_STATE = Gauge(
    "a4co_circuit_breaker_state",
    "State of the circuit breaker towards a peer (or Redis): 0 closed, 1 half-open, 2 open.",
    ["peer"],
)

RECANCEL_S = 0.05  # how often `cancel_and_wait` cancels a task that runs on


async def every(interval_s: float, work: Callable[[], Awaitable[object]], what: str) -> None:
    """Run `work` now and every `interval_s` seconds, for ever (a service's background job); a
    failure is logged, and the next tick tries again. An outage of PostgreSQL or Redis is logged
    when it begins and when the job works again, not at every tick."""
    down = False
    while True:
        try:
            await work()
        except DEPENDENCY_OUTAGES as exc:
            if not down:
                log.warning("%s: a dependency is unavailable (%r); again every %.1f s", what, exc, interval_s)
            down = True
        except Exception:  # the next tick tries again
            log.exception("%s failed; trying again in %.1f s", what, interval_s)
        else:
            if down:
                log.warning("%s: working again", what)
            down = False
        await asyncio.sleep(interval_s)  # the job's period


async def cancel_and_wait(task: asyncio.Task[Any], timeout_s: float) -> bool:
    """Cancel `task` and wait until it ends, at most `timeout_s`; whether it ended (if not, it is
    left behind, logged).

    The cancellation is repeated while the task runs on: redis-py's asyncio client swallows one
    that reaches it in the middle of a command about half of the time (redis 8.1.0: 105 of 200
    pings cancelled in flight returned their answer instead), and a loop around the command then
    goes on. A health monitor stopped that way held a service's stop for the 15 s of its bound.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.warning("%s did not stop within %.0f s; left behind", task.get_name(), timeout_s)
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(RECANCEL_S, remaining))
    if not task.cancelled():
        task.exception()  # retrieved: an error it ended with is the caller's to report, not asyncio's
    return True


async def wait_set(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for `event` at most `timeout_s`; whether it was set.

    Timeouts here are `asyncio.timeout`, never `asyncio.wait_for` (ruff bans it): on Python 3.11,
    wait_for returns when the awaited thing completes in the same turn of the loop as a cancellation
    of the waiting task, and the cancellation is lost; a loop stopped by cancelling it just as an
    event arrived went on for ever.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            return await event.wait()
    return False


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: the strategy's 1 s first delay, doubling, 30 s cap.

    `jitter` takes up to that fraction off each delay, so that replicas retrying the same failure
    spread out instead of retrying in step; a delay never exceeds the cap.
    """

    first_s: float = 1.0
    cap_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay before retry number `attempt` (1 for the first retry)."""
        base = min(self.cap_s, self.first_s * self.factor ** max(0, attempt - 1))
        draw = (rng or random).random()
        return base * (1.0 - self.jitter * draw)

    def floor(self, attempt: int) -> float:
        """The shortest delay `delay(attempt)` can return."""
        return min(self.cap_s, self.first_s * self.factor ** max(0, attempt - 1)) * (1.0 - self.jitter)


class BreakerOpenError(Exception):
    """A call was refused because the peer's circuit is open."""

    def __init__(self, peer: str, retry_in_s: float) -> None:
        super().__init__(f"circuit to {peer} is open; next try in {retry_in_s:.1f} s")
        self.peer = peer
        self.retry_in_s = retry_in_s


class BreakerState(enum.IntEnum):
    """The state of a circuit, as exported in the `a4co_circuit_breaker_state` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """The strategy's breaker: opens after `threshold` failures within `window_s`, and lets one
    trial call through `reset_s` after opening (half-open); its success closes the circuit, its
    failure opens it again. The clock is injectable so that tests need not sleep.

    Each change is logged, with the failure that caused it, for the operator who sees calls
    refused: a warning when the circuit opens (the calls are refused from then on, where nothing
    else is logged of them) and when it closes again.
    """

    def __init__(
        self,
        peer: str,
        *,
        threshold: int = 5,
        window_s: float = 60.0,
        reset_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.peer, self.threshold, self.window_s, self.reset_s = peer, threshold, window_s, reset_s
        self._clock = clock
        self._failures: deque[float] = deque()
        self._opened_at = 0.0
        self._first_opened_at = 0.0  # when the circuit last opened from closed
        self._trial_in_flight = False
        self.state = BreakerState.CLOSED

    def _set(self, state: BreakerState, cause: str = "") -> None:
        if state == self.state:
            return
        was, self.state = self.state, state
        self._say(was, state, cause)

    @property
    def current(self) -> BreakerState:
        """The state a call would meet now, as `a4co_circuit_breaker_state` exports it: an open
        circuit whose reset time has passed is half-open (its next call goes through as the
        trial), though no call has come since to move it there."""
        if self.state == BreakerState.OPEN and self._refused_for() <= 0:
            return BreakerState.HALF_OPEN
        return self.state

    def _refused_for(self) -> float:
        """How much longer an open circuit refuses calls (0 or less: the next call is the trial)."""
        return self.reset_s - (self._clock() - self._opened_at)

    def _say(self, was: BreakerState, state: BreakerState, cause: str) -> None:
        """Log a change of the circuit, with the failure that caused it."""
        if state == BreakerState.HALF_OPEN:
            log.info("circuit to %s half-open: one trial call goes through", self.peer)
        elif state == BreakerState.CLOSED:
            since = self._clock() - self._first_opened_at
            log.warning(
                "circuit to %s closed: it answers again, %.1f s after the circuit opened", self.peer, since
            )
        elif was == BreakerState.CLOSED:
            last = f" (the last: {cause})" if cause else ""
            log.warning(
                "circuit to %s opened after %d failures within %.0f s%s: calls to it are refused for %.0f s",
                self.peer, self.threshold, self.window_s, last, self.reset_s,
            )  # fmt: skip
        else:
            failure = f" ({cause})" if cause else ""
            log.warning(
                "circuit to %s opened again: the trial call failed%s; calls are refused for another %.0f s",
                self.peer, failure, self.reset_s,
            )  # fmt: skip

    def before_call(self) -> None:
        """Raise BreakerOpenError when the call must not go out now."""
        if self.state == BreakerState.OPEN:
            if (left := self._refused_for()) > 0:
                raise BreakerOpenError(self.peer, left)
            self._set(BreakerState.HALF_OPEN)
        if self.state == BreakerState.HALF_OPEN:
            if self._trial_in_flight:
                raise BreakerOpenError(self.peer, 0.0)
            self._trial_in_flight = True

    def record_success(self) -> None:
        """A call went through: a half-open circuit closes."""
        self._trial_in_flight = False
        if self.state != BreakerState.CLOSED:
            self._failures.clear()
            self._set(BreakerState.CLOSED)

    def record_abandoned(self) -> None:
        """A call ended without a word on the peer (its caller cancelled it): if it was the
        half-open circuit's trial, the next call is; else the circuit would refuse every call
        from then on, waiting for a trial that never ends."""
        self._trial_in_flight = False

    def record_failure(self, cause: str = "") -> None:
        """A call failed in a way that counts against the peer; `cause` says how (a status code,
        an exception), for the log line of the circuit's opening."""
        now = self._clock()
        self._trial_in_flight = False
        if self.state == BreakerState.HALF_OPEN:
            self._open(now, cause)
            return
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self.window_s:
            self._failures.popleft()
        if len(self._failures) >= self.threshold:
            self._open(now, cause)

    def _open(self, now: float, cause: str) -> None:
        if self.state == BreakerState.CLOSED:
            self._first_opened_at = now
        self._opened_at = now
        self._failures.clear()
        self._set(BreakerState.OPEN, cause)


def exported(breaker: CircuitBreaker) -> CircuitBreaker:
    """`breaker`, its state read at each scrape into `a4co_circuit_breaker_state`: a circuit left
    open when calls stopped shows half-open once its reset time has passed, not open for good."""
    BREAKER_STATE.labels(breaker.peer).set_function(lambda: float(breaker.current))
    return breaker
