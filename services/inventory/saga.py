"""inventory's part of the order saga: reserve all lines or none when an order is paid, release
when it is cancelled, commit when it is delivered. Rows are locked in product order, so no product
is oversold however many orders arrive at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from a4co.inventory.events.v1 import inventory_events_pb2 as events
from a4co.orders.events.v1 import order_events_pb2 as order_events
from services.inventory.adapters.postgres import Reservations
from services.inventory.domain import StockLevel, became_low
from services.inventory.handlers import Deps, level_event, low_stock_warning, put_in_cache
from services.platform.db import Connection
from services.platform.events.consumer import HandlerContext
from services.platform.timestamps import to_timestamp


def _refresher(deps: Deps, levels: list[StockLevel]) -> Callable[[], Awaitable[None]] | None:
    """What refreshes the cache with `levels` once the transaction has committed."""
    if not levels:
        return None

    async def refresh() -> None:
        await put_in_cache(deps, levels)  # one round trip for the whole transaction's levels

    return refresh


def holds_stock(event: order_events.OrderStatusChanged) -> bool:
    """The only status changes inventory acts on: PAID (reserve), CANCELLED (release) and
    RETURNED (the units back in stock)."""
    return event.status in (
        order_events.ORDER_STATUS_PAID,
        order_events.ORDER_STATUS_CANCELLED,
        order_events.ORDER_STATUS_RETURNED,
    )


@dataclass(frozen=True, slots=True)
class _Step:
    """What one event asks of an order's stock, waiting for the rest of its transaction's."""

    deps: Deps
    ctx: HandlerContext  # the event's: its follow-ups carry its flow
    order_id: str
    kind: Literal["reserve", "release", "commit", "return"]
    reason: str = ""
    wanted: tuple[tuple[str, int], ...] = ()  # for "reserve": units per product, in product order


async def on_order_status_changed(
    deps: Deps, event: order_events.OrderStatusChanged, ctx: HandlerContext
) -> None:
    """PAID: reserve; CANCELLED: release whatever is held; RETURNED: the units back in stock."""
    if event.status == order_events.ORDER_STATUS_PAID:
        wanted: dict[str, int] = {}
        for line in event.lines:
            wanted[line.product_id] = wanted.get(line.product_id, 0) + line.quantity
        ctx.stage(_run, _Step(deps, ctx, event.order_id, "reserve", wanted=tuple(sorted(wanted.items()))))
    elif event.status == order_events.ORDER_STATUS_CANCELLED:
        ctx.stage(_run, _Step(deps, ctx, event.order_id, "release", reason=event.reason or "ORDER_CANCELLED"))
    elif event.status == order_events.ORDER_STATUS_RETURNED:
        ctx.stage(_run, _Step(deps, ctx, event.order_id, "return", reason=event.reason or "RETURNED"))


async def on_order_delivered(deps: Deps, event: order_events.OrderDelivered, ctx: HandlerContext) -> None:
    """The units left with the customer: commit the reservation."""
    ctx.stage(_run, _Step(deps, ctx, event.order_id, "commit", reason="DELIVERED"))


class _Held:
    """Reservations made in memory, to be written together."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, int]] = []
        self.moves: dict[str, tuple[int, int]] = {}

    def add(self, order_id: str, product_id: str, quantity: int) -> None:
        self.lines.append((order_id, product_id, quantity))
        units, changes = self.moves.get(product_id, (0, 0))
        self.moves[product_id] = (units + quantity, changes + 1)

    async def write(self, reservations: Reservations) -> list[StockLevel]:
        if not self.lines:
            return []
        levels = await reservations.hold_many(self.lines, self.moves)
        self.lines, self.moves = [], {}
        return levels


async def _run(conn: Connection, steps: list[_Step]) -> Callable[[], Awaitable[None]] | None:
    """The stock steps of a transaction's events, in their order. Reservations are decided in
    memory against the products locked (in product order, with the look-up of the orders reserved
    before) with one statement, and written with one; a release or a commit runs where its event
    came, after the reservations before it are written, so that the events take effect in their
    order. Every changed level is put in the cache once the transaction has committed."""
    reservations = Reservations(conn)
    reserving = [s for s in steps if s.kind == "reserve"]
    done: set[str] = set()
    levels: dict[str, StockLevel] = {}
    if reserving:
        done, levels = await reservations.existing_and_locked(
            [s.order_id for s in reserving], sorted({pid for s in reserving for pid, _ in s.wanted})
        )
    held = _Held()
    changed: dict[str, StockLevel] = {}
    for step in steps:
        if step.kind == "reserve":
            if step.order_id not in done:
                done.add(step.order_id)
                await _reserve(step, levels, held)
            continue
        for level in await held.write(reservations):
            levels[level.product_id] = changed[level.product_id] = level
        for level in await _settle(step, reservations):
            levels[level.product_id] = changed[level.product_id] = level
    for level in await held.write(reservations):
        changed[level.product_id] = level
    return _refresher(steps[0].deps, list(changed.values()))


async def _reserve(step: _Step, levels: dict[str, StockLevel], held: _Held) -> None:
    """Every line or none (StockReserved, or StockReservationFailed with the shortages)."""
    now = to_timestamp(datetime.now(UTC))
    shortages = [
        events.StockShortage(
            product_id=pid, requested=qty, available=levels[pid].available if pid in levels else 0
        )
        for pid, qty in step.wanted
        if pid not in levels or levels[pid].available < qty
    ]
    if shortages:
        reason = "UNKNOWN_PRODUCT" if any(s.product_id not in levels for s in shortages) else "OUT_OF_STOCK"
        await step.ctx.publish(
            events.StockReservationFailed(
                order_id=step.order_id, reason=reason, shortages=shortages, fail_time=now
            ),
            aggregate_id=step.order_id,
        )
        return
    before = {pid: levels[pid] for pid, _ in step.wanted}
    for pid, qty in step.wanted:
        held.add(step.order_id, pid, qty)
        level = levels[pid]
        levels[pid] = replace(
            level, reserved=level.reserved + qty, version=level.version + 1, updated_at=datetime.now(UTC)
        )
    await step.ctx.publish(
        events.StockReserved(
            order_id=step.order_id,
            lines=[
                events.ReservedLine(product_id=pid, quantity=qty, stock=level_event(levels[pid]))
                for pid, qty in step.wanted
            ],
            reserve_time=now,
        ),
        aggregate_id=step.order_id,
    )
    for pid, _ in step.wanted:
        if became_low(before[pid], levels[pid]):
            await step.ctx.publish(low_stock_warning(levels[pid]), aggregate_id=pid)


async def _settle(step: _Step, reservations: Reservations) -> list[StockLevel]:
    """Release (StockReleased) or commit the order's held lines; nothing held, nothing to do. A
    returned order's lines go back to stock (StockReleased)."""
    if step.kind == "return":
        return await _give_back(step, reservations)
    committed = step.kind == "commit"
    held = await reservations.held(step.order_id)
    if not held:
        return []
    after = [
        (pid, qty, await reservations.settle(step.order_id, pid, qty, committed=committed))
        for pid, qty in held
    ]
    if not committed:
        await _released(step, after)
    return [a for _, _, a in after]


async def _give_back(step: _Step, reservations: Reservations) -> list[StockLevel]:
    """A returned order's units in stock again, once: those its delivery committed on hand
    again, those still held (the delivery's event not applied yet) released."""
    lines = await reservations.returnable(step.order_id)
    after = [
        (pid, qty, await reservations.give_back(step.order_id, pid, qty, held=held))
        for pid, qty, held in lines
    ]
    if after:
        await _released(step, after)
    return [a for _, _, a in after]


async def _released(step: _Step, after: list[tuple[str, int, StockLevel]]) -> None:
    await step.ctx.publish(
        events.StockReleased(
            order_id=step.order_id,
            lines=[events.ReservedLine(product_id=p, quantity=q, stock=level_event(a)) for p, q, a in after],
            reason=step.reason,
            release_time=to_timestamp(datetime.now(UTC)),
        ),
        aggregate_id=step.order_id,
    )
