"""The transports: the mail server behind a circuit breaker, and the development file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.notifications.adapters.transports import FileTransport, GuardedTransport, Outgoing
from services.platform.resilience import BreakerOpenError, BreakerState, CircuitBreaker

MESSAGE = Outgoing("c-1", "ana@jaen.es", "Hola", "¿Qué tal?")


class Flaky:
    """A transport that fails while `down`, or never answers while `hanging`, counting the sends
    it was asked for."""

    def __init__(self) -> None:
        self.down, self.hanging = True, False
        self.asked = 0
        self.reached = asyncio.Event()

    async def send(self, message: Outgoing) -> None:
        self.asked += 1
        self.reached.set()
        if self.hanging:
            await asyncio.Event().wait()  # a mail server that never answers, until cancelled
        if self.down:
            raise ConnectionRefusedError("mail server down")


async def opened(inner: Flaky, now: list[float]) -> GuardedTransport:
    """`inner` behind the strategy's breaker on the clock `now`, opened by five failed sends."""
    guarded = GuardedTransport(inner, CircuitBreaker("mail", clock=lambda: now[0]))
    for _ in range(5):
        with pytest.raises(ConnectionRefusedError):
            await guarded.send(MESSAGE)
    return guarded


async def test_after_five_failures_sends_fail_at_once_until_a_trial_gets_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now, inner = [0.0], Flaky()
    guarded = await opened(inner, now)
    assert guarded.breaker.state == BreakerState.OPEN
    assert "(the last: ConnectionRefusedError: mail server down)" in caplog.records[-1].getMessage()
    with pytest.raises(BreakerOpenError):
        await guarded.send(MESSAGE)
    assert inner.asked == 5  # the sixth never reached the mail server
    now[0] = 31.0  # the breaker lets one trial through
    inner.down = False
    await guarded.send(MESSAGE)
    assert (guarded.breaker.state, inner.asked) == (BreakerState.CLOSED, 6)


async def test_a_trial_send_cancelled_leaves_the_next_send_to_try() -> None:
    """The service stops during the half-open circuit's trial send: the next send is the trial."""
    now, inner = [0.0], Flaky()
    guarded = await opened(inner, now)
    now[0], inner.hanging = 31.0, True
    inner.reached.clear()
    trial = asyncio.create_task(guarded.send(MESSAGE))
    await inner.reached.wait()
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    inner.down, inner.hanging = False, False
    await guarded.send(MESSAGE)
    assert guarded.breaker.state == BreakerState.CLOSED


async def test_the_file_transport_starts_a_new_file_when_its_file_is_deleted_or_moved(tmp_path: Path) -> None:
    transport = FileTransport(tmp_path)
    await transport.send(MESSAGE)
    transport.path.unlink()  # a developer clears the outbox while the service runs
    await transport.send(MESSAGE)
    assert len(transport.path.read_text().splitlines()) == 1  # went on into the deleted file before
    transport.path.rename(tmp_path / "old.jsonl")
    await transport.send(MESSAGE)
    await transport.send(MESSAGE)
    assert len(transport.path.read_text().splitlines()) == 2
    assert len((tmp_path / "old.jsonl").read_text().splitlines()) == 1
