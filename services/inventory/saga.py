"""inventory's part of the order saga: reserve all lines or none when an order is paid, release
when it is cancelled, commit when it is delivered. Rows are locked in product order, so no product
is oversold however many orders arrive at once."""

from __future__ import annotations

from datetime import UTC, datetime

from a4co.inventory.events.v1 import inventory_events_pb2 as events
from a4co.orders.events.v1 import order_events_pb2 as order_events
from services.inventory.adapters.postgres import Reservations
from services.inventory.domain import StockLevel, became_low
from services.inventory.handlers import Deps, level_event, low_stock_warning
from services.platform.events.consumer import HandlerContext
from services.platform.timestamps import to_timestamp


def _refresh_cache(deps: Deps, ctx: HandlerContext, levels: list[StockLevel]) -> None:
    async def refresh() -> None:
        for level in levels:
            await deps.cache.put(level)

    ctx.after_commit(refresh)


def holds_stock(event: order_events.OrderStatusChanged) -> bool:
    """The only status changes inventory acts on: PAID (reserve) and CANCELLED (release)."""
    return event.status in (order_events.ORDER_STATUS_PAID, order_events.ORDER_STATUS_CANCELLED)


async def on_order_status_changed(
    deps: Deps, event: order_events.OrderStatusChanged, ctx: HandlerContext
) -> None:
    """PAID: reserve; CANCELLED: release whatever is held."""
    if event.status == order_events.ORDER_STATUS_PAID:
        await reserve(deps, event, ctx)
    elif event.status == order_events.ORDER_STATUS_CANCELLED:
        await settle(deps, event.order_id, event.reason or "ORDER_CANCELLED", ctx, committed=False)


async def reserve(deps: Deps, event: order_events.OrderStatusChanged, ctx: HandlerContext) -> None:
    """Every line or none (StockReserved, or StockReservationFailed with the shortages)."""
    reservations = Reservations(ctx.conn)
    if await reservations.exist(event.order_id):
        return
    wanted: dict[str, int] = {}
    for line in event.lines:
        wanted[line.product_id] = wanted.get(line.product_id, 0) + line.quantity
    levels = await reservations.lock(sorted(wanted))
    shortages = [
        events.StockShortage(
            product_id=pid, requested=qty, available=levels[pid].available if pid in levels else 0
        )
        for pid, qty in sorted(wanted.items())
        if pid not in levels or levels[pid].available < qty
    ]
    now = to_timestamp(datetime.now(UTC))
    if shortages:
        reason = "UNKNOWN_PRODUCT" if any(s.product_id not in levels for s in shortages) else "OUT_OF_STOCK"
        await ctx.publish(
            events.StockReservationFailed(
                order_id=event.order_id, reason=reason, shortages=shortages, fail_time=now
            ),
            aggregate_id=event.order_id,
        )
        return
    after = {pid: await reservations.hold(event.order_id, pid, qty) for pid, qty in sorted(wanted.items())}
    await ctx.publish(
        events.StockReserved(
            order_id=event.order_id,
            lines=[
                events.ReservedLine(product_id=p, quantity=wanted[p], stock=level_event(a))
                for p, a in after.items()
            ],
            reserve_time=now,
        ),
        aggregate_id=event.order_id,
    )
    for pid, level in after.items():
        if became_low(levels[pid], level):
            await ctx.publish(low_stock_warning(level), aggregate_id=pid)
    _refresh_cache(deps, ctx, list(after.values()))


async def settle(deps: Deps, order_id: str, reason: str, ctx: HandlerContext, *, committed: bool) -> None:
    """Release (StockReleased) or commit the order's held lines; nothing held, nothing to do."""
    reservations = Reservations(ctx.conn)
    held = await reservations.held(order_id)
    if not held:
        return
    after = [
        (pid, qty, await reservations.settle(order_id, pid, qty, committed=committed)) for pid, qty in held
    ]
    if not committed:
        await ctx.publish(
            events.StockReleased(
                order_id=order_id,
                lines=[
                    events.ReservedLine(product_id=p, quantity=q, stock=level_event(a)) for p, q, a in after
                ],
                reason=reason,
                release_time=to_timestamp(datetime.now(UTC)),
            ),
            aggregate_id=order_id,
        )
    _refresh_cache(deps, ctx, [a for _, _, a in after])


async def on_order_delivered(deps: Deps, event: order_events.OrderDelivered, ctx: HandlerContext) -> None:
    """The units left with the customer: commit the reservation."""
    await settle(deps, event.order_id, "DELIVERED", ctx, committed=True)
