"""A stream's queue of live messages: in order, bounded, then why it ended."""

from __future__ import annotations

import pytest

from services.notifications.adapters.live import Watch
from services.platform.errors import ResourceExhaustedError, UnavailableError


async def test_messages_come_in_order_then_the_reason_the_watch_ended() -> None:
    watch = Watch(backlog=5)
    watch.offer("one")
    watch.offer("two")
    watch.end(UnavailableError("DEPENDENCY_UNAVAILABLE", "lost"))
    watch.offer("three")  # after the end: not kept
    assert [await watch.next(), await watch.next()] == ["one", "two"]
    with pytest.raises(UnavailableError):
        await watch.next()


async def test_a_watch_that_falls_behind_its_backlog_ends_after_what_it_kept() -> None:
    watch = Watch(backlog=2)
    for document in ("one", "two", "three", "four"):
        watch.offer(document)
    assert [await watch.next(), await watch.next()] == ["one", "two"]
    with pytest.raises(ResourceExhaustedError) as ended:
        await watch.next()
    assert ended.value.reason == "WATCHER_FELL_BEHIND"


async def test_the_first_end_is_the_one_reported() -> None:
    watch = Watch(backlog=1)
    watch.offer("one")
    watch.offer("two")  # falls behind
    watch.end(UnavailableError("DEPENDENCY_UNAVAILABLE", "lost"))
    assert await watch.next() == "one"
    with pytest.raises(ResourceExhaustedError):
        await watch.next()
