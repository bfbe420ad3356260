"""How many points a cause is worth: pure rules."""

from __future__ import annotations

WELCOME_POINTS = 50
CENTS_PER_POINT = 100  # one point per whole euro paid


def purchase_points(amount_cents: int) -> int:
    """Points for a payment: one per whole euro."""
    return max(0, amount_cents // CENTS_PER_POINT)
