"""Run the follower of an announced memory for the length of a block."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from services.platform.announced import AnnouncedMemory
from tests.support.waiting import eventually


@contextlib.asynccontextmanager
async def following(memory: AnnouncedMemory[Any]) -> AsyncIterator[None]:
    """`memory`'s follower running, from its first subscription to the end of the block."""
    task = asyncio.create_task(memory.follow())
    try:
        await eventually(lambda: memory.following, what=f"subscribed to {memory.channel}")
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
