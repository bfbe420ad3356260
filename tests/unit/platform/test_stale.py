"""Stale Redis copies: kept marked until written again, and marked anew by a write failing
meanwhile."""

from __future__ import annotations

import asyncio

import pytest

from services.platform.stale import StaleKeys


def test_keys_stay_marked_until_written_and_a_write_failing_meanwhile_marks_anew() -> None:
    stale = StaleKeys("test")
    stale.mark(["a", "b"])
    written: list[set[str]] = []

    async def down(keys: set[str]) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    async def up(keys: set[str]) -> None:
        stale.mark(["c"])  # another write failed while these were read from PostgreSQL
        written.append(keys)

    async def scenario() -> tuple[int, int]:
        with pytest.raises(ConnectionRefusedError):
            await stale.rewrite(down)
        assert ("a" in stale, "b" in stale, len(stale)) == (True, True, 2)
        first = await stale.rewrite(up)
        second = await stale.rewrite(lambda keys: asyncio.sleep(0))
        return first, second

    assert asyncio.run(scenario()) == (2, 1)
    assert written == [{"a", "b"}]
    assert len(stale) == 0
