"""The sandbox payment provider: deterministic outcomes from documented test numbers.

| method | number | outcome of a charge |
|---|---|---|
| card | 4242 4242 4242 4242 (and any other valid card) | approved |
| card | 4000 0000 0000 0002 | CARD_DECLINED |
| card | 4000 0000 0000 9995 | INSUFFICIENT_FUNDS |
| card | 4000 0000 0000 0119 | PROVIDER_TIMEOUT after `timeout_s` |
| SEPA | ES91 2100 0418 4502 0005 1332 (and any other valid IBAN) | approved |
| Bizum | 600 000 002 | CARD_DECLINED |
| Bizum | any other valid mobile | approved |

The outcome is written into the token, so it survives restarts; charges are idempotent per key.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid

from services.payments.domain import MethodType
from services.payments.ports import Charge, ProviderError

OUTCOMES = {
    "4000000000000002": "CARD_DECLINED",
    "4000000000009995": "INSUFFICIENT_FUNDS",
    "4000000000000119": "PROVIDER_TIMEOUT",
    "600000002": "CARD_DECLINED",
}
MESSAGES = {
    "CARD_DECLINED": "Tarjeta rechazada por el emisor.",
    "INSUFFICIENT_FUNDS": "Fondos insuficientes.",
    "PROVIDER_TIMEOUT": "El proveedor de pagos no respondió a tiempo.",
}


class SandboxProvider:
    """A provider for development and tests; never moves money."""

    def __init__(self, timeout_s: float = 3.0) -> None:
        self.timeout_s = timeout_s
        self._charges: dict[str, Charge] = {}

    async def tokenize(self, method_type: MethodType, secret: str) -> str:
        """`sbx_<outcome>_<digest>`: the outcome travels in the token."""
        outcome = OUTCOMES.get(secret, "APPROVED")
        digest = hashlib.sha256(f"{method_type}:{secret}".encode()).hexdigest()[:16]
        return f"sbx_{outcome}_{digest}"

    async def charge(self, token: str, amount_cents: int, currency: str, idempotency_key: str) -> Charge:
        """Approve, refuse, or hang past the timeout, as the token says."""
        if idempotency_key in self._charges:
            return self._charges[idempotency_key]
        outcome = (
            token[len("sbx_") :].rsplit("_", 1)[0] if token.startswith("sbx_") else "UNKNOWN_PAYMENT_METHOD"
        )
        if outcome == "PROVIDER_TIMEOUT":
            await asyncio.sleep(self.timeout_s)  # the simulated provider hangs
            raise ProviderError(outcome, MESSAGES[outcome])
        if outcome != "APPROVED":
            raise ProviderError(outcome, MESSAGES.get(outcome, "Método de pago desconocido."))
        charge = Charge(f"ch_{uuid.uuid4().hex[:20]}", amount_cents)
        self._charges[idempotency_key] = charge
        return charge

    async def refund(self, reference: str, amount_cents: int, idempotency_key: str) -> str:
        """Always succeeds."""
        return f"re_{hashlib.sha256(idempotency_key.encode()).hexdigest()[:20]}"
