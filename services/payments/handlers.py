"""payments' use cases."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from services.payments.adapters.postgres import Methods, PaymentRecord, PaymentsUnitOfWork, StoredMethod
from services.payments.domain import (
    Verdict,
    check_bizum,
    check_card,
    check_iban,
    digits_only,
    normalise_spanish_mobile,
)
from services.payments.ports import PaymentProvider
from services.platform.auth import Principal
from services.platform.errors import NotFoundError
from services.platform.paging import Page


@dataclass(frozen=True, slots=True)
class Deps:
    """What the use cases are built with."""

    uow: Callable[[], PaymentsUnitOfWork]
    # Single statements on stored methods run on the pool, each its own implicit transaction:
    # one round trip instead of BEGIN, the statement and COMMIT.
    methods: Methods
    provider: PaymentProvider
    today: Callable[[], date] = lambda: datetime.now(UTC).date()


@dataclass(frozen=True, slots=True)
class CardInput:
    """A card as typed."""

    number: str
    exp_month: int
    exp_year: int
    cvc: str


async def validate_method(
    deps: Deps,
    principal: Principal,
    card: CardInput | None = None,
    iban: str | None = None,
    phone: str | None = None,
) -> tuple[Verdict, str]:
    """Check one payment method; a valid one is tokenised and kept. Returns its id ('' if invalid)."""
    if card is not None:
        verdict = check_card(card.number, card.exp_month, card.exp_year, card.cvc, deps.today())
        secret = digits_only(card.number)
    elif iban is not None:
        verdict = check_iban(iban)
        secret = iban.replace(" ", "").upper()
    else:
        verdict = check_bizum(phone or "")
        secret = normalise_spanish_mobile(phone or "")
    if not verdict.valid:
        return verdict, ""
    token = await deps.provider.tokenize(verdict.method_type, secret)
    method = StoredMethod(
        str(uuid.uuid4()), principal.user_id, verdict.method_type, verdict.brand, verdict.last_four, token
    )
    await deps.methods.add(method)
    return verdict, method.payment_method_id


async def get_payment(deps: Deps, principal: Principal, order_id: str) -> PaymentRecord:
    """An order's payment, for its customer or an admin."""
    async with deps.uow() as uow:
        payment = await uow.payments.by_order(order_id)
    if payment is None:
        raise NotFoundError("PAYMENT_NOT_FOUND", f"no payment for order {order_id}")
    principal.require_self_or_admin(payment.customer_id)
    return payment


async def _owned(deps: Deps, principal: Principal, payment_method_id: str) -> StoredMethod:
    """A stored method, deleted or not, for its customer or an admin."""
    method = await deps.methods.get(payment_method_id)
    if method is None:
        raise NotFoundError("PAYMENT_METHOD_NOT_FOUND", f"no payment method {payment_method_id}")
    principal.require_self_or_admin(method.customer_id)
    return method


async def get_method(deps: Deps, principal: Principal, payment_method_id: str) -> StoredMethod:
    """A stored method that may be used, for its customer or an admin."""
    method = await _owned(deps, principal, payment_method_id)
    if method.deleted_at is not None:
        raise NotFoundError("PAYMENT_METHOD_DELETED", f"payment method {payment_method_id} was deleted")
    return method


async def list_methods(deps: Deps, principal: Principal, customer_id: str, page: Page) -> list[StoredMethod]:
    """A page of a customer's methods in use, newest first, for that customer or an admin."""
    target = customer_id or principal.user_id
    principal.require_self_or_admin(target)
    return await deps.methods.page(target, page)


async def delete_method(deps: Deps, principal: Principal, payment_method_id: str) -> StoredMethod:
    """Delete a stored method, for its customer or an admin; again, it is returned unchanged."""
    method = await _owned(deps, principal, payment_method_id)
    deleted = await deps.methods.delete(method.payment_method_id)
    if deleted is None:  # gone from the table since this process read it
        raise NotFoundError("PAYMENT_METHOD_NOT_FOUND", f"no payment method {payment_method_id}")
    return deleted
