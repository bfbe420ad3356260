"""Coalesced look-ups: who waits for whom, what each round trip fetches, and how failures and
cancellations stay with their own callers."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from services.platform.coalesce import Coalescer
from tests.support.metrics import coalesced

DEADLINE_S = 5.0


class Source:
    """A look-up whose round trips can be held open and made to fail; it records what each asked."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()
        self.fail_next: Exception | None = None

    async def fetch(self, keys: list[str]) -> Mapping[str, str]:
        self.asked.append(keys)
        self.started.set()
        await self.release.wait()
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        return {k: k.upper() for k in keys if not k.startswith("missing")}


Answer = asyncio.Task[Mapping[str, str]]


async def held_first_round_trip(source: Source, coalescer: Coalescer[str, str]) -> Answer:
    """A first caller whose round trip is running and held open."""
    source.release.clear()
    source.started.clear()
    first = asyncio.create_task(coalescer.get(["a"]))
    async with asyncio.timeout(DEADLINE_S):
        await source.started.wait()
    return first


async def queued_behind_a_held_round_trip(
    kind: str, *keys: list[str], max_keys: int = 2000
) -> tuple[Source, Coalescer[str, str], Answer, list[Answer]]:
    """A coalescer whose first caller's round trip is held open, and callers that asked meanwhile
    for each of `keys`, queued (each caller's own start, not a wait for a condition)."""
    source = Source()
    coalescer = Coalescer(kind, source.fetch, max_keys=max_keys)
    first = await held_first_round_trip(source, coalescer)
    queued = [asyncio.create_task(coalescer.get(k)) for k in keys]
    await asyncio.sleep(0)
    return source, coalescer, first, queued


async def test_a_caller_alone_gets_its_values_and_absent_keys_have_none() -> None:
    source = Source()
    coalescer = Coalescer("test_alone", source.fetch)
    found = await coalescer.get(["a", "missing-b"])
    assert (dict(found), source.asked) == ({"a": "A"}, [["a", "missing-b"]])
    assert await coalescer.get([]) == {}
    assert len(source.asked) == 1  # no keys, no round trip


async def test_callers_who_ask_during_a_round_trip_share_the_next_one() -> None:
    before = coalesced("test_share", "count")
    source, _, first, others = await queued_behind_a_held_round_trip(
        "test_share", ["b", "c"], ["c", "d"], ["e"]
    )
    source.release.set()
    async with asyncio.timeout(DEADLINE_S):
        answers = await asyncio.gather(first, *others)
    assert source.asked == [["a"], ["b", "c", "d", "e"]]  # distinct keys, oldest caller first
    assert [answers[1]["b"], answers[2]["d"], answers[3]["e"]] == ["B", "D", "E"]
    assert coalesced("test_share", "count") - before == 2


async def test_a_round_trip_takes_at_most_max_keys_but_always_its_first_caller() -> None:
    source, _, first, queued = await queued_behind_a_held_round_trip(
        "test_max", ["b", "c"], ["d", "e"], ["f", "g", "h", "i"], max_keys=3
    )
    source.release.set()
    async with asyncio.timeout(DEADLINE_S):
        answers = await asyncio.gather(first, *queued)
    assert source.asked == [["a"], ["b", "c"], ["d", "e"], ["f", "g", "h", "i"]]
    assert answers[3]["i"] == "I"


async def test_a_failed_round_trip_fails_its_callers_only_and_the_next_one_runs() -> None:
    source, _, first, (queued,) = await queued_behind_a_held_round_trip("test_fail", ["b"])
    source.fail_next = ConnectionResetError("PostgreSQL went away")
    source.release.set()
    async with asyncio.timeout(DEADLINE_S):
        answers = await asyncio.gather(first, queued, return_exceptions=True)
    assert isinstance(answers[0], ConnectionResetError)
    assert answers[1] == {"b": "B"}
    assert source.asked == [["a"], ["b"]]


async def test_a_caller_cancelled_while_waiting_is_left_out_and_spares_a_lone_round_trip() -> None:
    source, coalescer, first, (gone, kept) = await queued_behind_a_held_round_trip(
        "test_cancel", ["gone"], ["kept"]
    )
    gone.cancel()
    source.release.set()
    async with asyncio.timeout(DEADLINE_S):
        assert (await first)["a"] == "A"
        assert (await kept)["kept"] == "KEPT"
    assert gone.cancelled()
    assert source.asked == [["a"], ["kept"]]

    first = await held_first_round_trip(source, coalescer)
    alone = asyncio.create_task(coalescer.get(["alone"]))
    await asyncio.sleep(0)
    alone.cancel()
    source.release.set()
    runner = coalescer._runner
    assert runner is not None
    async with asyncio.timeout(DEADLINE_S):
        await first
        await runner  # it ends once no one waits
    assert source.asked[-1] == ["a"]  # no round trip for the cancelled caller alone


async def test_callers_are_cancelled_not_left_hanging_when_the_runner_is() -> None:
    source, coalescer, first, (waiting,) = await queued_behind_a_held_round_trip("test_runner", ["b"])
    runner = coalescer._runner
    assert runner is not None
    runner.cancel()
    async with asyncio.timeout(DEADLINE_S):
        results = await asyncio.gather(first, waiting, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    source.release.set()
    async with asyncio.timeout(DEADLINE_S):
        assert (await coalescer.get(["c"]))["c"] == "C"  # a new runner for whoever asks next
