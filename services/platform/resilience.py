"""Resilience policies shared by event consumers, the outbox relay and gRPC clients."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: the strategy's 1 s first delay, doubling, 30 s cap.

    `jitter` takes up to that fraction off each delay, so that replicas retrying the same failure
    spread out instead of retrying in step; a delay never exceeds the cap.
    """

    first_s: float = 1.0
    cap_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay before retry number `attempt` (1 for the first retry)."""
        base = min(self.cap_s, self.first_s * self.factor ** max(0, attempt - 1))
        draw = (rng or random).random()
        return base * (1.0 - self.jitter * draw)

    def floor(self, attempt: int) -> float:
        """The shortest delay `delay(attempt)` can return."""
        return min(self.cap_s, self.first_s * self.factor ** max(0, attempt - 1)) * (
            1.0 - self.jitter
        )
