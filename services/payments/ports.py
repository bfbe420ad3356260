"""What payments needs from a payment provider."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.payments.domain import MethodType


class ProviderError(Exception):
    """A charge or refund the provider refused or could not complete."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Charge:
    """A completed charge."""

    reference: str
    amount_cents: int


class PaymentProvider(Protocol):
    """A payment provider (a real acquirer, or the sandbox)."""

    async def tokenize(self, method_type: MethodType, secret: str) -> str:
        """Exchange a card number, IBAN or phone number for a reusable token."""

    async def charge(self, token: str, amount_cents: int, currency: str, idempotency_key: str) -> Charge:
        """Charge a token once per idempotency key; ProviderError when refused or timed out."""

    async def refund(self, reference: str, amount_cents: int, idempotency_key: str) -> str:
        """Give back a charge; returns the refund's reference."""
