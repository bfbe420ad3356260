"""A shutdown step returns on time, even one that swallows its cancellation; a task that swallows
one is cancelled again until it ends."""

from __future__ import annotations

import asyncio
import contextlib

from grpc_health.v1 import health

from services.platform.grpc.server import HealthMonitor
from services.platform.resilience import cancel_and_wait, wait_set
from services.platform.runtime import bounded


async def test_a_step_that_finishes_reports_success() -> None:
    assert await bounded(asyncio.sleep(0), 1.0, "quick step")


async def test_a_failing_step_reports_failure() -> None:
    async def broken() -> None:
        raise ConnectionError("peer gone")

    assert not await bounded(broken(), 1.0, "broken step")


async def stubborn(release: asyncio.Event) -> None:
    """Swallows every cancellation until released."""
    while not release.is_set():
        with contextlib.suppress(asyncio.CancelledError):
            await release.wait()


async def test_a_step_that_swallows_cancellation_is_left_behind_on_time() -> None:
    release = asyncio.Event()
    # asyncio.wait_for would wait here forever (the test would hit its timeout); bounded returns.
    assert not await bounded(stubborn(release), 0.2, "stubborn step")
    release.set()


class SwallowsOnce:
    """A loop around a call that, like redis-py's in the middle of a command, swallows the first
    cancellation that reaches it and returns its answer instead."""

    def __init__(self) -> None:
        self.swallowed = 0
        self.rounds = 0

    async def call(self) -> bool:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            if self.swallowed:
                raise
            self.swallowed += 1
        return True

    async def loop(self) -> None:
        while True:
            self.rounds += 1
            await self.call()


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again_until_it_ends() -> None:
    once = SwallowsOnce()
    task = asyncio.create_task(once.loop())
    await asyncio.sleep(0)  # in its call
    assert await cancel_and_wait(task, 5.0)
    assert task.cancelled()
    assert (once.swallowed, once.rounds) == (1, 2)  # it went round once more, then ended
    task = asyncio.create_task(asyncio.sleep(0))
    assert await cancel_and_wait(task, 5.0)  # one that ends at once too


async def test_a_task_that_never_ends_is_left_behind_on_time() -> None:
    release = asyncio.Event()
    task = asyncio.create_task(stubborn(release))
    await asyncio.sleep(0)  # waiting
    assert not await cancel_and_wait(task, 0.2)
    release.set()
    await task


async def test_a_health_monitor_whose_check_swallows_its_cancellation_still_stops() -> None:
    once = SwallowsOnce()
    in_check = asyncio.Event()

    async def check() -> bool:
        in_check.set()
        return await once.call()

    monitor = HealthMonitor(health.aio.HealthServicer(), ["a4co.test.v1.Test"], {"redis": check})
    monitor.start(interval_s=10.0)
    await wait_set(in_check, 5.0)
    async with asyncio.timeout(30) as deadline:
        await monitor.stop()
    assert not deadline.expired()
    assert monitor._task is not None
    assert monitor._task.done()
    # The check was cancelled too, and not waited for: it swallows that and ends on its own.
    check_task = monitor._checking["redis"]
    await asyncio.wait({check_task}, timeout=5.0)
    assert (check_task.result(), once.swallowed) == (True, 1)
