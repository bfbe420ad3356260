"""Password hashing: a few at a time, whatever the number of calls waiting."""

from __future__ import annotations

import asyncio
import threading
import time

from argon2 import PasswordHasher

from services.identity.adapters.postgres import HASHING_AT_ONCE, Argon2Hasher


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
