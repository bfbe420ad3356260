"""A clock that a test moves by hand, for whatever takes one (`clock=`): time passes without the
test sleeping."""

from __future__ import annotations


class Clock:
    """Reads `now`, which the test sets or advances."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
