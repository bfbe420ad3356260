"""payments' part of the order saga: charge on OrderCreated, refund on a cancellation after payment."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from a4co.orders.events.v1 import order_events_pb2 as order_events
from a4co.payments.events.v1 import payment_events_pb2 as events
from a4co.type.v1 import money_pb2
from services.payments.adapters.postgres import Charges, Methods, StoredMethod
from services.payments.domain import MethodType
from services.payments.ports import PaymentProvider, ProviderError
from services.platform.events.consumer import HandlerContext
from services.platform.timestamps import to_timestamp

METHOD_TYPES = {
    MethodType.CARD: events.PAYMENT_METHOD_TYPE_CARD,
    MethodType.SEPA_DEBIT: events.PAYMENT_METHOD_TYPE_SEPA_DEBIT,
    MethodType.BIZUM: events.PAYMENT_METHOD_TYPE_BIZUM,
}


@dataclass(frozen=True, slots=True)
class SagaDeps:
    """The provider, and how long a charge may take before it counts as failed."""

    provider: PaymentProvider
    charge_timeout_s: float = 5.0


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


async def on_order_created(deps: SagaDeps, event: order_events.OrderCreated, ctx: HandlerContext) -> None:
    """Charge the order's total once, whatever the redeliveries (PaymentProcessed or PaymentFailed)."""
    charges = Charges(ctx.conn)
    if await charges.attempted(event.order_id):
        return  # already charged or refused: once per order
    method = await Methods(ctx.conn).get(event.payment_method_id)
    reference, reason = await _attempt(deps, method, event)
    payment_id = str(uuid.uuid4())
    money = money_pb2.Money(currency_code=event.total.currency_code, amount_cents=event.total.amount_cents)
    now = to_timestamp(datetime.now(UTC))
    status = "succeeded" if reference else "failed"
    amount, currency = event.total.amount_cents, event.total.currency_code or "EUR"
    if not await charges.record(
        payment_id, event.order_id, event.customer_id, method, amount, currency, status, reference, reason
    ):
        return
    if reference:
        assert method is not None
        await ctx.publish(
            events.PaymentProcessed(
                payment_id=payment_id,
                order_id=event.order_id,
                customer_id=event.customer_id,
                amount=money,
                method_type=METHOD_TYPES[method.method_type],
                last_four=method.last_four,
                provider_reference=reference,
                process_time=now,
            ),
            aggregate_id=payment_id,
        )
    else:
        await ctx.publish(
            events.PaymentFailed(
                payment_id=payment_id,
                order_id=event.order_id,
                customer_id=event.customer_id,
                amount=money,
                reason=reason,
                message=f"No se pudo cobrar el pedido: {reason}",
                fail_time=now,
            ),
            aggregate_id=payment_id,
        )


def refund_due(event: order_events.OrderStatusChanged) -> bool:
    """The only status changes payments acts on: cancellations with a refund required."""
    return event.status == order_events.ORDER_STATUS_CANCELLED and event.refund_required


async def on_order_status_changed(
    deps: SagaDeps, event: order_events.OrderStatusChanged, ctx: HandlerContext
) -> None:
    """A cancelled order that was charged is refunded, once (RefundIssued)."""
    if not refund_due(event):
        return
    charges = Charges(ctx.conn)
    payment = await charges.for_refund(event.order_id)
    if payment is None:
        return  # never charged, or refunded already
    reference = await deps.provider.refund(
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
