"""The timeout sweep's cutoff: a step held up by orders' own database outage gets a whole timeout
once the database answers again (decision 32)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.orders.domain import TimeoutCutoff

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
GRACE = timedelta(seconds=30)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def sweep(timeouts: TimeoutCutoff, seconds: float, *, works: bool = True) -> datetime:
    """One sweep at `seconds`, as watch_timeouts runs it: the cutoff, then its outcome."""
    cutoff = timeouts.cutoff(at(seconds))
    if works:
        timeouts.worked(at(seconds))
    else:
        timeouts.failed(at(seconds))
    return cutoff


def test_without_an_outage_every_deadline_before_now_has_passed() -> None:
    timeouts = TimeoutCutoff(GRACE)
    assert [sweep(timeouts, s) for s in (0, 0.5, 1)] == [at(0), at(0.5), at(1)]
    assert timeouts.held is None


def test_after_an_outage_only_deadlines_before_it_pass_until_the_grace_ends() -> None:
    timeouts = TimeoutCutoff(GRACE)
    sweep(timeouts, 0)  # the last sweep that worked
    for s in (0.5, 10, 35.5):
        sweep(timeouts, s, works=False)
    # The sweep that ends the outage, and those of the grace, hold only what was due before it.
    assert sweep(timeouts, 36) == at(0)
    assert timeouts.held == (at(0), at(66))
    assert sweep(timeouts, 65.5) == at(0)
    assert sweep(timeouts, 66) == at(66), "the grace is over: every step due times out"
    assert timeouts.held is None


def test_an_outage_within_the_grace_keeps_the_earliest_start() -> None:
    timeouts = TimeoutCutoff(GRACE)
    sweep(timeouts, 0)
    sweep(timeouts, 1, works=False)
    sweep(timeouts, 10)  # ends the first outage: held until 40
    sweep(timeouts, 20, works=False)
    assert sweep(timeouts, 45, works=False) == at(0), "still down after the first grace"
    assert sweep(timeouts, 50) == at(0)
    assert timeouts.held == (at(0), at(80))


def test_an_outage_before_any_sweep_worked_starts_when_it_was_seen() -> None:
    timeouts = TimeoutCutoff(GRACE)
    sweep(timeouts, 5, works=False)
    assert sweep(timeouts, 9) == at(5)
    assert timeouts.held == (at(5), at(39))
