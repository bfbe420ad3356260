"""payments' part of the order saga: charge on OrderCreated, refund on a cancellation after payment."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from a4co.identity.events.v1 import identity_events_pb2 as identity_events
from a4co.orders.events.v1 import order_events_pb2 as order_events
from a4co.payments.events.v1 import payment_events_pb2 as events
from a4co.type.v1 import money_pb2
from services.payments.adapters.postgres import Attempt, Charges, Methods, StoredMethod
from services.payments.domain import MethodType
from services.payments.ports import PaymentProvider, ProviderError
from services.platform.db import Connection
from services.platform.events.consumer import HandlerContext
from services.platform.flow import new_id
from services.platform.timestamps import to_timestamp

METHOD_TYPES = {
    MethodType.CARD: events.PAYMENT_METHOD_TYPE_CARD,
    MethodType.SEPA_DEBIT: events.PAYMENT_METHOD_TYPE_SEPA_DEBIT,
    MethodType.BIZUM: events.PAYMENT_METHOD_TYPE_BIZUM,
}


@dataclass(frozen=True, slots=True)
class SagaDeps:
    """The provider, how long a charge may take before it counts as failed, and the process's
    payment methods: those GetPaymentMethod read are kept in memory (a kept method never
    changes), so an order's charge finds its method there, checked moments before."""

    provider: PaymentProvider
    charge_timeout_s: float = 5.0
    methods: Methods | None = None


async def _attempt(
    deps: SagaDeps, method: StoredMethod | None, event: order_events.OrderCreated
) -> tuple[str, str]:
    """(reference, '') for a charge, ('', reason) for a refusal."""
    if method is None or method.customer_id != event.customer_id:
        return "", "UNKNOWN_PAYMENT_METHOD"
    try:
        async with asyncio.timeout(deps.charge_timeout_s):
            charge = await deps.provider.charge(
                method.provider_token,
                event.total.amount_cents,
                event.total.currency_code,
                idempotency_key=event.order_id,
            )
    except ProviderError as refused:
        return "", refused.reason
    except TimeoutError:
        return "", "PROVIDER_TIMEOUT"
    return charge.reference, ""


@dataclass(frozen=True, slots=True)
class _Placed:
    """An OrderCreated to charge, waiting for the rest of its transaction's."""

    deps: SagaDeps
    ctx: HandlerContext  # the event's: its follow-up carries its flow
    event: order_events.OrderCreated


@dataclass(frozen=True, slots=True)
class _Refund:
    """A cancellation to refund, in turn with its transaction's charges."""

    deps: SagaDeps
    ctx: HandlerContext
    event: order_events.OrderStatusChanged


async def on_order_created(deps: SagaDeps, event: order_events.OrderCreated, ctx: HandlerContext) -> None:
    """Charge the order's total once, whatever the redeliveries (PaymentProcessed or PaymentFailed)."""
    ctx.stage(_charge_all, _Placed(deps, ctx, event))


async def _charge_all(conn: Connection, batch: list[_Placed | _Refund]) -> None:
    """Charge the orders a transaction's events placed, one after another, each once: which were
    attempted already, and the methods not in memory, are read with one statement each, and the
    attempts recorded with one. A refund is made where its event came, after the charges before it are
    recorded, so that the events of a transaction take effect in their order."""
    charges = Charges(conn)
    placed_orders = [item for item in batch if isinstance(item, _Placed)]
    done: set[str] = set()
    methods: dict[str, StoredMethod] = {}
    if placed_orders:  # a batch of refunds only reads nothing ahead
        done = await charges.attempted([p.event.order_id for p in placed_orders])
        known = placed_orders[0].deps.methods or Methods(conn)
        methods = await known.get_many([p.event.payment_method_id for p in placed_orders], conn=conn)
    attempts: list[tuple[_Placed, Attempt]] = []
    for item in batch:
        if isinstance(item, _Refund):  # in its turn: after the charges before it are recorded
            await _record(charges, attempts)
            attempts = []
            await _refund(charges, item)
            continue
        event = item.event
        if event.order_id in done:
            continue  # already charged or refused: once per order
        done.add(event.order_id)
        method = methods.get(event.payment_method_id)
        reference, reason = await _attempt(item.deps, method, event)
        attempt = Attempt(
            new_id(),
            event.order_id,
            event.customer_id,
            method,
            event.total.amount_cents,
            event.total.currency_code or "EUR",
            reference,
            reason,
        )
        attempts.append((item, attempt))
    await _record(charges, attempts)


async def _record(charges: Charges, attempts: list[tuple[_Placed, Attempt]]) -> None:
    """Record the attempts with one statement, and announce those recorded now."""
    if not attempts:
        return
    recorded = await charges.record([a for _, a in attempts])
    for placed, attempt in attempts:
        if attempt.order_id in recorded:
            await _announce(placed, attempt)


async def _announce(placed: _Placed, attempt: Attempt) -> None:
    """PaymentProcessed or PaymentFailed for a recorded attempt."""
    event = placed.event
    money = money_pb2.Money(currency_code=event.total.currency_code, amount_cents=event.total.amount_cents)
    now = to_timestamp(datetime.now(UTC))
    if attempt.reference:
        assert attempt.method is not None
        await placed.ctx.publish(
            events.PaymentProcessed(
                payment_id=attempt.payment_id,
                order_id=event.order_id,
                customer_id=event.customer_id,
                amount=money,
                method_type=METHOD_TYPES[attempt.method.method_type],
                last_four=attempt.method.last_four,
                provider_reference=attempt.reference,
                process_time=now,
            ),
            aggregate_id=attempt.payment_id,
        )
    else:
        await placed.ctx.publish(
            events.PaymentFailed(
                payment_id=attempt.payment_id,
                order_id=event.order_id,
                customer_id=event.customer_id,
                amount=money,
                reason=attempt.failure_reason,
                message=f"No se pudo cobrar el pedido: {attempt.failure_reason}",
                fail_time=now,
            ),
            aggregate_id=attempt.payment_id,
        )


async def on_user_deleted(deps: SagaDeps, event: identity_events.UserDeleted, ctx: HandlerContext) -> None:
    """A customer closed their account: their saved methods are deleted, as DeletePaymentMethod
    deletes one (the orders placed before are still refunded with them, decision 43)."""
    await ctx.conn.execute(
        "UPDATE payment_methods SET deleted_at = coalesce(deleted_at, now()) WHERE customer_id = $1",
        event.user_id,
    )


def refund_due(event: order_events.OrderStatusChanged) -> bool:
    """The only status changes payments acts on: cancellations and returns with a refund
    required."""
    undone = (order_events.ORDER_STATUS_CANCELLED, order_events.ORDER_STATUS_RETURNED)
    return event.status in undone and event.refund_required


async def on_order_status_changed(
    deps: SagaDeps, event: order_events.OrderStatusChanged, ctx: HandlerContext
) -> None:
    """A cancelled or returned order that was charged is refunded, once (RefundIssued)."""
    if refund_due(event):
        # In turn with the charges of the transaction (`_charge_all`), not ahead of them.
        ctx.stage(_charge_all, _Refund(deps, ctx, event))


async def _refund(charges: Charges, item: _Refund) -> None:
    event, ctx = item.event, item.ctx
    payment = await charges.for_refund(event.order_id)
    if payment is None:
        return  # never charged, or refunded already
    reference = await item.deps.provider.refund(
        payment.provider_reference, payment.amount_cents, idempotency_key=f"refund:{event.order_id}"
    )
    await charges.refunded(event.order_id, payment.amount_cents)
    await ctx.publish(
        events.RefundIssued(
            refund_id=reference,
            payment_id=payment.payment_id,
            order_id=event.order_id,
            customer_id=payment.customer_id,
            amount=money_pb2.Money(currency_code=payment.currency_code, amount_cents=payment.amount_cents),
            reason=event.reason,
            refund_time=to_timestamp(datetime.now(UTC)),
        ),
        aggregate_id=payment.payment_id,
    )
