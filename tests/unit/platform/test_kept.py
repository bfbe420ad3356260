"""The in-process memory of values, each with the moment it was kept."""

from __future__ import annotations

import pytest

from services.platform.kept import Kept


def test_the_least_recently_used_leave_first() -> None:
    kept: Kept[str, int] = Kept(2)
    kept.keep("a", 1)
    kept.keep("b", 2)
    assert kept.get("a") == 1  # "a" is now the most recent
    kept.keep("c", 3)
    assert (kept.get("a"), kept.get("b"), kept.get("c"), len(kept)) == (1, None, 3, 2)


def test_a_value_kept_again_stays_as_first_kept_and_size_zero_keeps_nothing() -> None:
    kept: Kept[str, object] = Kept(4)
    first, second = object(), object()
    kept.keep("a", first)
    kept.keep("a", second)
    assert kept.get("a") is first
    nothing: Kept[str, int] = Kept(0)
    nothing.keep("a", 1)
    assert (nothing.get("a"), len(nothing)) == (None, 0)


def test_a_forgotten_value_is_kept_anew() -> None:
    kept: Kept[str, int] = Kept(4)
    kept.keep("a", 1)
    kept.forget("a")
    kept.forget("never kept")
    assert (kept.get("a"), len(kept)) == (None, 0)
    kept.keep("a", 2)
    assert kept.get("a") == 2


def test_a_value_older_than_a_reader_allows_is_not_given_and_renew_reads_it_anew(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr("services.platform.kept.time.monotonic", lambda: now[0])
    kept: Kept[str, int] = Kept(4)
    kept.keep("a", 1)
    now[0] += 3.0
    assert (kept.get("a", max_age_s=2.0), kept.get("a")) == (None, 1), (
        "too old for one, any age for the other"
    )
    kept.renew("a", 2)
    assert kept.get("a", max_age_s=2.0) == 2
