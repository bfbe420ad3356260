"""The circuit breaker and the backoff, on an injected clock; waits that a stop always ends."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from services.platform.resilience import (
    Backoff,
    BreakerOpenError,
    BreakerState,
    CircuitBreaker,
    every,
    wait_set,
)
from tests.support.clock import Clock


def failing(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.before_call()
        breaker.record_failure()


def test_five_failures_within_a_minute_open_the_circuit() -> None:
    clock = Clock()
    breaker = CircuitBreaker("inventory", clock=clock)
    failing(breaker, 4)
    assert state_of(breaker) is BreakerState.CLOSED
    failing(breaker, 1)
    assert state_of(breaker) is BreakerState.OPEN
    with pytest.raises(BreakerOpenError) as refused:
        breaker.before_call()
    assert refused.value.retry_in_s == pytest.approx(30.0)


def test_failures_spread_over_more_than_a_minute_do_not_open_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker("inventory", clock=clock)
    for _ in range(10):
        failing(breaker, 1)
        clock.now += 16.0  # one failure every 16 s: never five within 60 s
    assert state_of(breaker) is BreakerState.CLOSED


def test_half_open_after_thirty_seconds_one_trial_closes_or_reopens() -> None:
    clock = Clock()
    breaker = CircuitBreaker("payments", clock=clock)
    failing(breaker, 5)
    clock.now += 29.9
    with pytest.raises(BreakerOpenError):
        breaker.before_call()
    clock.now += 0.2
    breaker.before_call()  # the trial call
    assert state_of(breaker) is BreakerState.HALF_OPEN
    with pytest.raises(BreakerOpenError):
        breaker.before_call()  # only one trial at a time
    breaker.record_failure()
    assert state_of(breaker) is BreakerState.OPEN

    clock.now += 30.0
    breaker.before_call()
    breaker.record_success()
    assert state_of(breaker) is BreakerState.CLOSED
    breaker.before_call()  # calls flow again


def test_each_change_of_the_circuit_is_logged_with_the_failure_that_caused_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    breaker = CircuitBreaker("payments", clock=clock)
    with caplog.at_level(logging.INFO, logger="services.platform.resilience"):
        for _ in range(5):
            breaker.before_call()
            breaker.record_failure("UNAVAILABLE: failed to connect to all addresses")
        with pytest.raises(BreakerOpenError):
            breaker.before_call()  # a refused call logs nothing more
        clock.now += 30.0
        breaker.before_call()
        breaker.record_failure("DEADLINE_EXCEEDED: Deadline Exceeded")
        clock.now += 30.0
        breaker.before_call()
        breaker.record_success()
        breaker.before_call()
        breaker.record_success()  # closed already: nothing to say
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert said == [
        (
            "WARNING",
            "circuit to payments opened after 5 failures within 60 s (the last: UNAVAILABLE: failed to"
            " connect to all addresses): calls to it are refused for 30 s",
        ),
        ("INFO", "circuit to payments half-open: one trial call goes through"),
        (
            "WARNING",
            "circuit to payments opened again: the trial call failed (DEADLINE_EXCEEDED:"
            " Deadline Exceeded); calls are refused for another 30 s",
        ),
        ("INFO", "circuit to payments half-open: one trial call goes through"),
        ("WARNING", "circuit to payments closed: it answers again, 60.0 s after the circuit opened"),
    ]


def test_an_open_circuit_is_half_open_once_its_reset_time_has_passed_though_no_call_came() -> None:
    """What is exported: left open when the calls stopped, the circuit would let the next one
    through, and says so, rather than open until a call comes (at night, say)."""
    clock = Clock()
    breaker = CircuitBreaker("inventory", clock=clock)
    failing(breaker, 5)
    assert current(breaker) is BreakerState.OPEN
    clock.now += 29.9
    assert current(breaker) is BreakerState.OPEN
    clock.now += 0.1
    assert (current(breaker), state_of(breaker)) == (BreakerState.HALF_OPEN, BreakerState.OPEN)
    breaker.before_call()  # the trial
    assert current(breaker) is BreakerState.HALF_OPEN
    breaker.record_failure()
    assert current(breaker) is BreakerState.OPEN, "the trial failed: open for another 30 s"
    clock.now += 30.0
    breaker.before_call()
    breaker.record_success()
    assert current(breaker) is BreakerState.CLOSED


def test_backoff_doubles_from_one_second_with_jitter_and_a_thirty_second_cap() -> None:
    backoff = Backoff()
    rng = random.Random(7)
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (10, 30.0)]:
        delays = [backoff.delay(attempt, rng) for _ in range(50)]
        assert all(base * 0.8 <= d <= base for d in delays), (attempt, min(delays), max(delays))
        assert len(set(delays)) > 1, "jitter spreads retries"
        assert backoff.floor(attempt) == pytest.approx(base * 0.8)


def current(breaker: CircuitBreaker) -> BreakerState:
    """The state a call would meet now, read fresh (as `state_of`)."""
    return breaker.current


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """The breaker's state, read fresh (a helper keeps type narrowing out of the way)."""
    return breaker.state


def test_wait_set_tells_whether_the_event_came_in_time() -> None:
    async def scenario() -> tuple[bool, bool]:
        event = asyncio.Event()
        asyncio.get_running_loop().call_later(0.01, event.set)
        return await wait_set(event, 5), await wait_set(asyncio.Event(), 0.01)

    assert asyncio.run(scenario()) == (True, False)


def test_a_cancellation_in_the_same_turn_as_the_event_is_not_lost() -> None:
    async def scenario() -> asyncio.Task[bool]:
        event = asyncio.Event()
        waiter = asyncio.create_task(wait_set(event, 5))
        await asyncio.sleep(0)  # the waiter is waiting
        event.set()
        waiter.cancel()
        await asyncio.wait({waiter}, timeout=1)
        return waiter

    waiter = asyncio.run(scenario())
    assert waiter.cancelled()  # asyncio.wait_for would have returned True here


def test_every_logs_an_outage_when_it_begins_and_ends_and_any_other_failure_each_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcomes: list[Exception | None] = [
        ConnectionRefusedError(111, "Connection refused"),
        FileNotFoundError(2, "No such file or directory"),  # PostgreSQL's Unix socket, gone
        ConnectionRefusedError(111, "Connection refused"),
        None,
        ValueError("a bug"),
        ValueError("a bug"),
        None,
    ]
    ran = 0
    done = asyncio.Event()

    async def work() -> None:
        nonlocal ran
        outcome = outcomes[min(ran, len(outcomes) - 1)]
        ran += 1
        if ran == len(outcomes):
            done.set()
        if outcome is not None:
            raise outcome

    async def scenario() -> None:
        job = asyncio.create_task(every(0, work, "the sweep"))
        async with asyncio.timeout(10):
            await done.wait()
        job.cancel()
        await asyncio.wait({job})

    with caplog.at_level(logging.WARNING, logger="services.platform.resilience"):
        asyncio.run(scenario())
    said = [
        (r.levelname, r.getMessage().split(" (")[0].split(";")[0], r.exc_info is not None)
        for r in caplog.records
    ]
    assert said == [
        ("WARNING", "the sweep: a dependency is unavailable", False),
        ("WARNING", "the sweep: working again", False),
        ("ERROR", "the sweep failed", True),
        ("ERROR", "the sweep failed", True),
    ]
