"""A shutdown step returns on time, even one that swallows its cancellation."""

from __future__ import annotations

import asyncio
import contextlib

from services.platform.runtime import bounded


async def test_a_step_that_finishes_reports_success() -> None:
    assert await bounded(asyncio.sleep(0), 1.0, "quick step")


async def test_a_failing_step_reports_failure() -> None:
    async def broken() -> None:
        raise ConnectionError("peer gone")

    assert not await bounded(broken(), 1.0, "broken step")


async def test_a_step_that_swallows_cancellation_is_left_behind_on_time() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    # asyncio.wait_for would wait here forever (the test would hit its timeout); bounded returns.
    assert not await bounded(stubborn(), 0.2, "stubborn step")
    release.set()
