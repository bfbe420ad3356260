"""Password hashing: a few at a time, sign-ins first, a wait too long refused (decision 38)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from argon2 import PasswordHasher

from services.identity.adapters.hashing import HASHING_AT_ONCE, REFUSED, Argon2Hasher
from services.identity.domain import HashingBusyError
from tests.support.waiting import eventually


class Counting:
    """Stands in for argon2's hasher: counts the hashes running at once (each takes 20 ms)."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def hash(self, password: str) -> str:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.02)  # the work itself, in its thread
        with self._lock:
            self.running -= 1
        return f"hashed:{password}"


async def test_no_more_than_two_hashes_run_at_once() -> None:
    inner = Counting()
    hasher = Argon2Hasher(inner, at_once=HASHING_AT_ONCE)  # type: ignore[arg-type]
    hashes = await asyncio.gather(*(hasher.hash(f"p{i}") for i in range(12)))
    assert hashes == [f"hashed:p{i}" for i in range(12)]
    assert inner.most == HASHING_AT_ONCE == 2  # asyncio's default executor ran up to 6 here


async def test_a_real_hash_verifies() -> None:
    hasher = Argon2Hasher(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    stored = await hasher.hash("aceite-de-jaen")
    assert await hasher.verify(stored, "aceite-de-jaen")
    assert not await hasher.verify(stored, "aceite-de-cordoba")
    assert not await hasher.verify("not a hash", "aceite-de-jaen")


class Gated:
    """Stands in for argon2's hasher: each hash or check runs until the test lets it end."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self._gates: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def _run(self, name: str) -> None:
        with self._lock:
            gate = self._gates.setdefault(name, threading.Event())
            self.started.append(name)
        assert gate.wait(10), f"{name} was never let through"

    def hash(self, password: str) -> str:
        self._run(password)
        return f"hashed:{password}"

    def verify(self, password_hash: str, password: str) -> bool:
        self._run(password)
        return password_hash == f"hashed:{password}"

    def let_through(self, name: str) -> None:
        with self._lock:
            self._gates.setdefault(name, threading.Event()).set()


async def started(inner: Gated, count: int) -> None:
    await eventually(lambda: len(inner.started) >= count, what=f"{count} hashes started")


async def waiting(hasher: Argon2Hasher, count: int) -> None:
    await eventually(lambda: hasher.waiting == count, what=f"{count} hashes waiting")


async def both_threads_busy(hasher: Argon2Hasher, inner: Gated) -> list[asyncio.Task[str]]:
    """Sign-ups `up0` and `up1` hashing, until let through."""
    running = [asyncio.create_task(hasher.hash(f"up{i}")) for i in range(2)]
    await started(inner, 2)
    return running


async def test_sign_ins_take_the_next_thread_before_the_sign_ups_waiting() -> None:
    inner = Gated()
    hasher = Argon2Hasher(inner, at_once=2, wait_s=60)  # type: ignore[arg-type]
    busy = await both_threads_busy(hasher, inner)
    queued = [asyncio.create_task(hasher.hash(f"up{i}")) for i in (2, 3)]
    await waiting(hasher, 2)
    sign_in = asyncio.create_task(hasher.verify("hashed:in", "in"))
    absent = asyncio.create_task(hasher.hash("no-account", sign_in=True))
    await waiting(hasher, 4)
    inner.let_through("up0")
    await started(inner, 3)
    inner.let_through("up1")
    await started(inner, 4)
    assert inner.started == ["up0", "up1", "in", "no-account"]  # ahead of up2 and up3, queued earlier
    for name in ("in", "no-account", "up2", "up3"):
        inner.let_through(name)
    assert await sign_in is True
    assert await asyncio.gather(absent, *busy, *queued) == [
        f"hashed:{n}" for n in ("no-account", "up0", "up1", "up2", "up3")
    ]
    assert inner.started[4:] == ["up2", "up3"]


async def test_a_wait_longer_than_allowed_is_refused_before_any_work() -> None:
    inner = Gated()
    # The running mean starts at 0.25 s a hash, so with two threads each call waiting ahead adds
    # 0.125 s: within 0.1 s the first sign-up to wait is taken (no one ahead), a second refused.
    hasher = Argon2Hasher(inner, at_once=2, wait_s=0.1)  # type: ignore[arg-type]
    running = await both_threads_busy(hasher, inner)
    first_waiting = asyncio.create_task(hasher.hash("up2"))
    await waiting(hasher, 1)
    refused_before = REFUSED.labels("sign_up")._value.get()
    with pytest.raises(HashingBusyError) as refused:
        await hasher.hash("up3")
    assert refused.value.reason == "HASHING_BUSY"
    assert refused.value.retry_delay_s == 1  # 0.125 s ahead, rounded up to a whole second
    assert REFUSED.labels("sign_up")._value.get() == refused_before + 1
    # A sign-in waits behind sign-ins only: none are waiting, so it is taken.
    sign_in = asyncio.create_task(hasher.verify("hashed:in", "in"))
    await waiting(hasher, 2)
    for name in ("up0", "up1", "in", "up2"):
        inner.let_through(name)
    assert await sign_in is True
    await asyncio.gather(*running, first_waiting)
    assert "up3" not in inner.started


async def test_a_caller_that_stops_waiting_leaves_its_place_and_a_thread_is_never_lost() -> None:
    inner = Gated()
    hasher = Argon2Hasher(inner, at_once=2, wait_s=60)  # type: ignore[arg-type]
    running = await both_threads_busy(hasher, inner)
    gone = asyncio.create_task(hasher.hash("gone"))
    kept = asyncio.create_task(hasher.hash("kept"))
    await waiting(hasher, 2)
    gone.cancel()
    await waiting(hasher, 1)
    # A caller that stops waiting while its hash runs: the thread stays held until the hash ends.
    running[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await running[0]
    assert hasher.waiting == 1
    assert inner.started == ["up0", "up1"]
    inner.let_through("up0")
    await started(inner, 3)
    assert inner.started[2] == "kept"
    for name in ("up1", "kept"):
        inner.let_through(name)
    assert list(await asyncio.gather(running[1], kept)) == ["hashed:up1", "hashed:kept"]
    # Both threads are free again: two hashes run at once, none waits.
    after = [asyncio.create_task(hasher.hash(f"after{i}")) for i in range(2)]
    await started(inner, 5)
    assert hasher.waiting == 0
    for i in range(2):
        inner.let_through(f"after{i}")
    await asyncio.gather(*after)
    assert "gone" not in inner.started


async def test_the_running_mean_follows_the_hashes_measured() -> None:
    hasher = Argon2Hasher(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    assert hasher.mean_s == 0.25  # the first guess
    for i in range(30):
        await hasher.hash(f"p{i}")
    assert hasher.mean_s < 0.05  # a cheap profile's hashes take well under a millisecond
