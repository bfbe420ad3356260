"""Stock levels and their rules: pure Python, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from services.platform.errors import FailedPreconditionError

# The most a product may have on hand: PostgreSQL's integer holds about twice as many.
MAX_ON_HAND = 1_000_000_000


class StockTooHighError(FailedPreconditionError):
    """A change would take the stock on hand over MAX_ON_HAND."""

    def __init__(self, product_id: str, on_hand: int, delta: int) -> None:
        super().__init__(
            "STOCK_ABOVE_LIMIT",
            f"{product_id}: {on_hand:,} on hand; changing it by {delta:,} would pass {MAX_ON_HAND:,}",
            metadata={"product_id": product_id, "on_hand": str(on_hand), "limit": str(MAX_ON_HAND)},
        )


class StockTooLowError(FailedPreconditionError):
    """A change would leave less on hand than is reserved, or a negative stock."""

    def __init__(self, product_id: str, on_hand: int, reserved: int, delta: int) -> None:
        super().__init__(
            "STOCK_BELOW_RESERVED",
            f"{product_id}: {on_hand} on hand and {reserved} reserved; cannot change by {delta}",
            metadata={"product_id": product_id, "on_hand": str(on_hand), "reserved": str(reserved)},
        )


@dataclass(frozen=True, slots=True)
class StockLevel:
    """One product's stock."""

    product_id: str
    artisan_id: str
    on_hand: int
    reserved: int
    low_stock_threshold: int
    version: int = 0
    updated_at: datetime | None = None

    @property
    def available(self) -> int:
        """What can still be sold."""
        return self.on_hand - self.reserved

    @property
    def low(self) -> bool:
        """Whether the available stock is under the artisan's threshold."""
        return self.low_stock_threshold > 0 and self.available < self.low_stock_threshold

    def adjusted(self, delta: int, threshold: int | None) -> StockLevel:
        """The stock after an artisan's change of `delta` units on hand."""
        on_hand = self.on_hand + delta
        if on_hand < self.reserved or on_hand < 0:
            raise StockTooLowError(self.product_id, self.on_hand, self.reserved, delta)
        if on_hand > MAX_ON_HAND:
            raise StockTooHighError(self.product_id, self.on_hand, delta)
        return replace(
            self,
            on_hand=on_hand,
            low_stock_threshold=self.low_stock_threshold if threshold is None else threshold,
        )


def became_low(before: StockLevel, after: StockLevel) -> bool:
    """Whether a change took the product under its threshold (a warning is due once per crossing)."""
    return after.low and not before.low


@dataclass(frozen=True, slots=True)
class Availability:
    """The answer to 'can I have this many?' for one product."""

    product_id: str
    requested: int
    available: int
    known: bool

    @property
    def ok(self) -> bool:
        """Whether the requested quantity is available."""
        return self.known and self.requested <= self.available
