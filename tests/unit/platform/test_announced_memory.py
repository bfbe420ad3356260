"""The announced memory's rules, without Redis: trusted only while following, bounded, superseded."""

from __future__ import annotations

from typing import cast

from redis.asyncio import Redis

from services.platform.announced import AnnouncedMemory


def memory(**kwargs: object) -> AnnouncedMemory[int]:
    def parse(message: str) -> tuple[str, int]:
        key, value = message.split()
        return key, int(value)

    return AnnouncedMemory(cast(Redis, None), "channel", parse, **kwargs)  # type: ignore[arg-type]


def test_nothing_is_remembered_or_trusted_while_not_following() -> None:
    m = memory()
    m.remember("a", 1)
    m.following = True
    assert m.get("a") is None
    m.remember("a", 1)
    assert m.get("a") == 1
    m.following = False
    assert m.get("a") is None


def test_a_value_is_kept_only_when_it_supersedes_the_remembered_one() -> None:
    m = memory(supersedes=lambda new, old: new >= old)
    m.following = True
    m.announced("a 5")
    m.announced("a 3")
    assert m.get("a") == 5
    m.announced("a 7")
    assert m.get("a") == 7


def test_the_oldest_write_is_forgotten_past_max_entries() -> None:
    m = memory(max_entries=2)
    m.following = True
    m.remember("a", 1)
    m.remember("b", 2)
    m.remember("a", 3)  # written again: now the newest
    m.remember("c", 4)
    assert (m.get("a"), m.get("b"), m.get("c")) == (3, None, 4)


def test_an_entry_expires_ttl_after_it_was_written() -> None:
    now = [0.0]
    m = memory(ttl_s=2.0, clock=lambda: now[0])
    m.following = True
    m.remember("a", 1)
    now[0] = 2.0
    assert m.get("a") == 1
    now[0] = 2.01
    assert m.get("a") is None
