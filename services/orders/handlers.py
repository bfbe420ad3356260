"""orders' use cases and the saga's event handlers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from google.protobuf.message import Message
from prometheus_client import Counter, Gauge

from a4co.artisans.events.v1 import artisan_events_pb2 as artisan_events
from a4co.identity.events.v1 import identity_events_pb2 as identity_events
from a4co.inventory.events.v1 import inventory_events_pb2 as inventory_events
from a4co.loyalty.events.v1 import loyalty_events_pb2 as loyalty_events
from a4co.orders.events.v1 import order_events_pb2 as events
from a4co.payments.events.v1 import payment_events_pb2 as payment_events
from a4co.type.v1 import address_pb2, lat_lng_pb2, money_pb2
from services.orders.adapters.peers import DeliveryQuote, Peers
from services.orders.adapters.postgres import Orders, OrdersUnitOfWork, Products
from services.orders.domain import (
    CANCEL_REASONS,
    CANCELLABLE,
    Line,
    Order,
    Outcome,
    ProductInfo,
    ProductWithdrawnError,
    Status,
    TimeoutCutoff,
    most_points,
    order_id_for,
    timeout_reason,
)
from services.platform import return_exceptions
from services.platform.auth import Principal, Role
from services.platform.db import Connection
from services.platform.errors import (
    A4coError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from services.platform.events.consumer import HandlerContext
from services.platform.events.outbox import OutboxWriter
from services.platform.flow import Flow, flow_scope
from services.platform.outages import DEPENDENCY_OUTAGES
from services.platform.paging import Page
from services.platform.resilience import every
from services.platform.timestamps import to_timestamp

log = logging.getLogger(__name__)

PRODUCT_LOOKUPS = Counter(
    "a4co_orders_product_lookups",
    "Products of new orders, by where orders found them: its own copy, or catalog (not learnt yet).",
    ["source"],
)
# Both series exist from the start (a rate of the catalog share reads 0, not nothing), and the
# label look-up is not repeated on every CreateOrder.
FROM_COPY, FROM_CATALOG = (PRODUCT_LOOKUPS.labels(source) for source in ("copy", "catalog"))

# Orders that entered each status, counted once the change is committed, by the replica that
# stored it (sum over replicas); and the orders whose saga is still running, counted every few
# seconds through the `orders_waiting` index. A count of every status over the whole table would
# grow with it.
STATUS_CHANGES = Counter(
    "a4co_order_status_changes", "Orders that entered each status (committed changes).", ["status"]
)
# Every series from the start (a rate reads 0, not nothing), each looked up once.
ENTERED = {status: STATUS_CHANGES.labels(status.value) for status in Status}
IN_FLIGHT = (Status.PENDING, Status.PAID)
ORDERS_IN_FLIGHT = Gauge("a4co_orders_in_flight", "Orders whose saga is still running.", ["status"])
# Returns asked for whose goods have not been marked back: they wait for the artisan, or for the
# operators to settle them (decision 52; the alert ReturnsWaitingLong).
RETURNS_WAITING = Gauge("a4co_orders_returns_waiting", "Orders whose return waits for its goods.")
OLDEST_RETURN_WAITING = Gauge(
    "a4co_orders_oldest_return_waiting_seconds",
    "How long the oldest return waiting for its goods has waited.",
)


# Orders cancelled, by why (a code the payment provider or inventory sent that is none of ours
# counts as OTHER, so that the series stay few): a timed-out step is a saga that stalls.
CANCELLATIONS = Counter(
    "a4co_orders_cancelled", "Orders cancelled, by reason (committed changes).", ["reason"]
)
CANCELLED_FOR = {reason: CANCELLATIONS.labels(reason) for reason in (*CANCEL_REASONS, "OTHER")}


def _entered(changes: list[tuple[Order, Order]]) -> None:
    """Count the statuses that committed changes (before, after) made orders enter, and why the
    cancelled ones were."""
    for before, after in changes:
        if after.status is not before.status:
            ENTERED[after.status].inc()
            if after.status is Status.CANCELLED:
                CANCELLED_FOR.get(after.reason, CANCELLED_FOR["OTHER"]).inc()


STATUS_TO_EVENT = {
    Status.PENDING: events.ORDER_STATUS_PENDING,
    Status.PAID: events.ORDER_STATUS_PAID,
    Status.CONFIRMED: events.ORDER_STATUS_CONFIRMED,
    Status.SHIPPED: events.ORDER_STATUS_SHIPPED,
    Status.DELIVERED: events.ORDER_STATUS_DELIVERED,
    Status.CANCELLED: events.ORDER_STATUS_CANCELLED,
    Status.RETURN_REQUESTED: events.ORDER_STATUS_RETURN_REQUESTED,
    Status.RETURNED: events.ORDER_STATUS_RETURNED,
}


class Publish(Protocol):
    """Adds an event to the current transaction's outbox."""

    async def __call__(self, event: Message, *, aggregate_id: str) -> object: ...


@dataclass(frozen=True, slots=True)
class Deps:
    """What the use cases are built with."""

    uow: Callable[[], OrdersUnitOfWork]
    # Statements that stand alone, on the pool: one round trip instead of BEGIN, it and COMMIT.
    orders: Orders
    outbox: OutboxWriter
    products: Products
    peers: Peers
    payment_timeout_s: float = 30.0
    reservation_timeout_s: float = 30.0
    # How long after its delivery an order's customer may ask to return it (decision 52).
    return_window: timedelta = timedelta(days=14)
    # Whether orders is connected to NATS and JetStream answers: while not, no step can be asked
    # nor answered.
    events_flowing: Callable[[], bool] = lambda: True


@dataclass(frozen=True, slots=True)
class NewOrder:
    """A customer's order as requested."""

    request_id: str
    lines: list[tuple[str, int]]
    payment_method_id: str
    delivery_address: dict[str, str]
    latitude: float
    longitude: float
    # The unit prices the customer was shown, by product: the order is placed only at these.
    expected_prices: dict[str, int] = field(default_factory=dict)
    # The loyalty points to spend on it (decision 54).
    redeem_points: int = 0


# Events -----------------------------------------------------------------------------------------


def _lines(order: Order) -> list[events.OrderLine]:
    def money(cents: int) -> money_pb2.Money:
        return money_pb2.Money(currency_code=order.currency_code, amount_cents=cents)

    return [
        events.OrderLine(
            product_id=x.product_id,
            product_name=x.product_name,
            quantity=x.quantity,
            unit_price=money(x.unit_price_cents),
            line_total=money(x.total_cents),
        )
        for x in order.lines
    ]


def _money(order: Order, cents: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code=order.currency_code, amount_cents=cents)


def created_event(order: Order) -> events.OrderCreated:
    """OrderCreated of a new order."""
    return events.OrderCreated(
        order_id=order.order_id,
        customer_id=order.customer_id,
        artisan_id=order.artisan_id,
        lines=_lines(order),
        subtotal=_money(order, order.subtotal_cents),
        delivery_fee=_money(order, order.delivery_fee_cents),
        total=_money(order, order.total_cents),
        payment_method_id=order.payment_method_id,
        delivery_address=address_pb2.Address(**order.delivery_address),
        delivery_location=lat_lng_pb2.LatLng(latitude=order.delivery_lat, longitude=order.delivery_lng),
        create_time=to_timestamp(order.created_at),
        points_redeemed=order.points_redeemed,
        discount=_money(order, order.discount_cents),
    )


def status_event(before: Order, after: Order) -> events.OrderStatusChanged:
    """OrderStatusChanged from one state of an order to the next."""
    return events.OrderStatusChanged(
        order_id=after.order_id,
        customer_id=after.customer_id,
        artisan_id=after.artisan_id,
        previous_status=STATUS_TO_EVENT[before.status],
        status=STATUS_TO_EVENT[after.status],
        reason=after.reason,
        cancel_note=after.cancel_note if after.status is Status.CANCELLED else "",
        return_note=after.return_note if after.return_requested_at is not None else "",
        lines=_lines(after),
        total=_money(after, after.total_cents),
        refund_required=after.needs_refund,
        change_time=to_timestamp(datetime.now(UTC)),
        points_redeemed=after.points_redeemed,
    )


def compensation_due(before: Order, after: Order) -> bool:
    """A success learnt after the order was cancelled must be undone: announce the cancellation
    again, so that payments refunds and inventory releases."""
    late = before.status is Status.CANCELLED and after.status is Status.CANCELLED
    return late and (
        (after.payment is Outcome.OK and before.payment is not Outcome.OK)
        or (after.stock is Outcome.OK and before.stock is not Outcome.OK)
    )


async def record(deps: Deps, orders: Orders, publish: Publish, before: Order, after: Order) -> Order:
    """Store a changed order with its next step deadline, and announce what changed."""
    changed = _changed(deps, before, after)
    if changed is None:
        return before
    saved = await orders.save(changed)
    await _announce(publish, before, saved)
    return saved


async def _announce(publish: Publish, before: Order, after: Order) -> None:
    """The events that the change from `before` to `after` makes."""
    if before.status is not after.status or compensation_due(before, after):
        await publish(status_event(before, after), aggregate_id=after.order_id)
    if after.delivered and not before.delivered:  # once: not again when a return is taken back
        delivered = events.OrderDelivered(
            order_id=after.order_id,
            customer_id=after.customer_id,
            artisan_id=after.artisan_id,
            lines=_lines(after),
            total=_money(after, after.total_cents),
            delivery_time=to_timestamp(after.delivery_time),
        )
        await publish(delivered, aggregate_id=after.order_id)


def _changed(deps: Deps, before: Order, after: Order) -> Order | None:
    """`after` with its next step deadline, or None when it changes nothing of `before`."""
    if after == before:
        return None
    return replace(after, step_deadline=_deadline(deps, after))


def _deadline(deps: Deps, order: Order) -> datetime | None:
    now = datetime.now(UTC)
    if order.status is Status.PENDING:
        return order.step_deadline or now + timedelta(seconds=deps.payment_timeout_s)
    if order.status is Status.PAID:
        return now + timedelta(seconds=deps.reservation_timeout_s)
    return None


# Commands ---------------------------------------------------------------------------------------


async def create_order(deps: Deps, principal: Principal, cmd: NewOrder) -> Order:
    """Check stock, payment method and delivery now; store the order PENDING with OrderCreated.

    A retried call with the same request id returns the same order and announces nothing new.
    Retries are rare, so a call looks for an earlier order only once it knows it needs one: when
    its insert finds the order stored, or when a check refuses it (a retry is answered with its
    order even after the stock it took has run out).
    """
    try:
        return await _create_order(deps, principal, cmd)
    except A4coError:
        placed = await deps.orders.by_request(principal.user_id, cmd.request_id)
        if placed is None:
            raise
        return placed


async def _create_order(deps: Deps, principal: Principal, cmd: NewOrder) -> Order:
    order_id = order_id_for(principal.user_id, cmd.request_id)
    products = await _products(deps, [pid for pid, _ in cmd.lines])
    for p in products:
        expected = cmd.expected_prices.get(p.product_id)
        if expected is not None and expected != p.price_cents:
            raise FailedPreconditionError(
                "PRICE_CHANGED",
                f"product {p.product_id} costs {p.price_cents} cents now, not {expected}",
                metadata={"product_id": p.product_id, "unit_price_cents": str(p.price_cents)},
            )
    sellers = {p.artisan_id for p in products}
    if len(sellers) != 1:
        raise InvalidArgumentError([FieldViolation("lines", "every product must come from the same artisan")])
    artisan_id = sellers.pop()
    lines = tuple(
        Line(p.product_id, p.name, qty, p.price_cents, p.return_exception)
        for p, (_, qty) in zip(products, cmd.lines, strict=True)
    )
    most = most_points(lines)
    if cmd.redeem_points > most:
        message = f"pays at most the products: {most} points for this order"
        raise InvalidArgumentError([FieldViolation("redeem_points", message)])
    # The three checks at once: the order waits for the slowest, not for their sum (the CPU they
    # cost did not change: docs/performance-history.md). When several fail, the answer is the first
    # failure in this order: stock, payment method, delivery.
    stock, method, quote = await asyncio.gather(
        deps.peers.ensure_stock(cmd.lines),
        deps.peers.ensure_payment_method(cmd.payment_method_id),
        deps.peers.quote(artisan_id, cmd.latitude, cmd.longitude),
        return_exceptions=True,
    )
    for outcome in (stock, method, quote):
        if isinstance(outcome, BaseException):
            raise outcome
    assert isinstance(quote, DeliveryQuote)
    if not quote.deliverable:
        raise FailedPreconditionError(
            "NOT_DELIVERABLE", f"the artisan does not deliver there ({quote.reason})"
        )
    now = datetime.now(UTC)
    order = Order(
        order_id=order_id,
        customer_id=principal.user_id,
        artisan_id=artisan_id,
        lines=lines,
        delivery_fee_cents=quote.fee_cents,
        payment_method_id=cmd.payment_method_id,
        delivery_address=cmd.delivery_address,
        delivery_lat=cmd.latitude,
        delivery_lng=cmd.longitude,
        request_id=cmd.request_id,
        points_redeemed=cmd.redeem_points,
        step_deadline=now + timedelta(seconds=deps.payment_timeout_s),
        created_at=now,
        updated_at=now,
    )
    created = deps.outbox.encode(created_event(order), aggregate_id=order_id)
    stored = await deps.orders.add(order, deps.outbox, [created])
    if stored is None:
        # The same request raced us (or was stored before ids were derived from requests,
        # decision 20): return its order.
        raced = await deps.orders.by_request(principal.user_id, cmd.request_id)
        assert raced is not None
        return raced
    ENTERED[stored.status].inc()  # one statement: already committed
    return stored


async def _products(deps: Deps, product_ids: list[str]) -> list[ProductInfo]:
    """The products of an order's lines, from orders' copy; catalog is asked only for those whose
    ProductPublished has not arrived yet, and its answers are kept."""
    known = await deps.products.get_many(product_ids)
    missing = [pid for pid in dict.fromkeys(product_ids) if pid not in known]
    FROM_COPY.inc(len(product_ids) - len(missing))
    if missing:
        FROM_CATALOG.inc(len(missing))
        fetched = await asyncio.gather(*(deps.peers.product(pid) for pid in missing))
        await deps.products.add(fetched)
        known.update((p.product_id, p) for p in fetched)
    products = [known[pid] for pid in product_ids]
    for p in products:
        if p.withdrawn:
            raise ProductWithdrawnError(p.product_id)
    return products


def _visible(order: Order, principal: Principal) -> bool:
    return principal.role is Role.ADMIN or principal.user_id in (order.customer_id, order.artisan_id)


async def get_order(deps: Deps, principal: Principal, order_id: str) -> Order:
    """An order, for its customer, its artisan or an admin."""
    async with deps.uow() as uow:
        order = await uow.orders.get(order_id)
    if order is None or not _visible(order, principal):
        # Someone else's order is reported as missing: its existence is not the caller's business.
        raise NotFoundError("ORDER_NOT_FOUND", f"no order {order_id}")
    return order


def whose_orders(principal: Principal, customer_id: str, artisan_id: str) -> tuple[str | None, str]:
    """The orders ListOrders reads (at most one of the two named, checked): the column and its
    value. The caller's own: a customer's purchases or an artisan's sales; an admin's, the
    customer's or the artisan's named, or every order (column None) naming neither; anyone else
    naming another, PERMISSION_DENIED."""
    if principal.role is Role.ADMIN:
        if artisan_id:
            return "artisan_id", artisan_id
        return ("customer_id", customer_id) if customer_id else (None, "")
    column = "artisan_id" if principal.role is Role.ARTISAN else "customer_id"
    named = artisan_id if column == "artisan_id" else customer_id
    other = customer_id if column == "artisan_id" else artisan_id
    if other or named not in ("", principal.user_id):
        raise PermissionDeniedError("NOT_OWNER", "only an admin lists the orders of another")
    return column, principal.user_id


async def list_orders(
    deps: Deps, column: str | None, owner: str, status: Status | None, page: Page
) -> list[Order]:
    """A page of a customer's purchases or an artisan's sales, or of every order (`whose_orders`),
    newest first."""
    async with deps.uow() as uow:
        return await uow.orders.page(column, owner, status, page)


async def _change(
    deps: Deps, order_id: str, allowed: Callable[[Order], bool], change: Callable[[Order], Order]
) -> Order:
    async with deps.uow() as uow:
        order = await uow.orders.get(order_id, for_update=True)
        if order is None or not allowed(order):
            raise NotFoundError("ORDER_NOT_FOUND", f"no order {order_id}")
        saved = await record(deps, uow.orders, uow.outbox.add, order, change(order))
    _entered([(order, saved)])
    return saved


async def cancel_order(deps: Deps, principal: Principal, order_id: str, reason: str) -> Order:
    """The customer (or an admin: ADMIN_CANCELLED) cancels before shipping, with a note in their
    words (`reason`); a paid order is refunded."""

    def allowed(o: Order) -> bool:
        return principal.role is Role.ADMIN or o.customer_id == principal.user_id

    def cancel(o: Order) -> Order:
        code = "CUSTOMER_CANCELLED" if o.customer_id == principal.user_id else "ADMIN_CANCELLED"
        return o.cancelled(code, reason)

    return await _change(deps, order_id, allowed, cancel)


async def mark_shipped(deps: Deps, principal: Principal, order_id: str) -> Order:
    """The selling artisan (or an admin) ships a confirmed order."""
    return await _change(deps, order_id, lambda o: _seller(o, principal), lambda o: o.ship())


async def mark_delivered(deps: Deps, principal: Principal, order_id: str) -> Order:
    """The selling artisan (or an admin) records the delivery (OrderDelivered)."""
    return await _change(
        deps, order_id, lambda o: _seller(o, principal), lambda o: o.deliver(datetime.now(UTC))
    )


async def request_return(deps: Deps, principal: Principal, order_id: str, reason: str) -> Order:
    """The customer (or an admin) asks to return a delivered order within its return window,
    saying why in their words (`reason`, told to the artisan)."""

    def allowed(o: Order) -> bool:
        return principal.role is Role.ADMIN or o.customer_id == principal.user_id

    return await _change(
        deps, order_id, allowed, lambda o: o.return_requested(datetime.now(UTC), deps.return_window, reason)
    )


async def cancel_return(deps: Deps, principal: Principal, order_id: str) -> Order:
    """The customer (or an admin) takes back a return asked for, before its goods came back."""

    def allowed(o: Order) -> bool:
        return principal.role is Role.ADMIN or o.customer_id == principal.user_id

    return await _change(deps, order_id, allowed, lambda o: o.return_cancelled())


async def mark_returned(deps: Deps, principal: Principal, order_id: str) -> Order:
    """The selling artisan (or an admin) records that a returned order's goods came back: the
    customer is refunded and inventory has the units again."""
    return await _change(
        deps, order_id, lambda o: _seller(o, principal), lambda o: o.returned(datetime.now(UTC))
    )


def _seller(order: Order, principal: Principal) -> bool:
    return principal.role is Role.ADMIN or order.artisan_id == principal.user_id


# Products ---------------------------------------------------------------------------------------


async def on_product(
    deps: Deps,
    event: artisan_events.ProductPublished | artisan_events.ProductUpdated | artisan_events.ProductWithdrawn,
    ctx: HandlerContext,
) -> None:
    """Keep what a new order needs of a product, so that CreateOrder does not ask catalog: as put on
    sale (revision 1), changed, or withdrawn; an older revision than the one kept changes nothing."""
    price = event.price
    product = ProductInfo(
        event.product_id,
        event.artisan_id,
        event.name,
        price.amount_cents,
        price.currency_code or "EUR",
        withdrawn=isinstance(event, artisan_events.ProductWithdrawn),
        return_exception=return_exceptions.name_of(event.return_exception),
    )
    revision = 1 if isinstance(event, artisan_events.ProductPublished) else event.revision
    await Products(ctx.conn).change(product, revision)
    if revision > 1:  # this process may have kept the product as it was
        ctx.after_commit(lambda: _forget(deps, event.product_id))


async def _forget(deps: Deps, product_id: str) -> None:
    deps.products.forget(product_id)


# Saga events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Fact:
    """What one saga event taught about an order, waiting for the rest of its transaction's."""

    deps: Deps
    ctx: HandlerContext  # the event's: its follow-ups carry its flow
    order_id: str
    learn: Callable[[Order], Order]


async def _learn(deps: Deps, ctx: HandlerContext, order_id: str, fact: Callable[[Order], Order]) -> None:
    ctx.stage(_learn_all, _Fact(deps, ctx, order_id, fact))


async def _learn_all(conn: Connection, facts: list[_Fact]) -> Callable[[], Awaitable[None]] | None:
    """Apply the facts of a transaction's saga events, in the order they came: the orders are read
    (locked) with one statement and written with one, instead of two statements per event. Each
    fact announces what it changed as if the events had been handled one after another."""
    orders = Orders(conn)
    current = await orders.lock_many(f.order_id for f in facts)
    changed: dict[str, Order] = {}
    steps: list[tuple[Order, Order]] = []
    for fact in facts:
        before = current.get(fact.order_id)
        if before is None:
            log.warning("saga event for unknown order %s ignored", fact.order_id)
            continue
        after = _changed(fact.deps, before, fact.learn(before))
        if after is None:
            continue
        await _announce(fact.ctx.publish, before, after)
        steps.append((before, after))
        current[fact.order_id] = changed[fact.order_id] = after
    if not changed:
        return None
    await orders.save_many(list(changed.values()))

    async def count() -> None:
        _entered(steps)

    return count


async def on_payment_processed(
    deps: Deps, event: payment_events.PaymentProcessed, ctx: HandlerContext
) -> None:
    """The order was charged."""
    await _learn(deps, ctx, event.order_id, lambda o: o.paid(True))


async def on_payment_failed(deps: Deps, event: payment_events.PaymentFailed, ctx: HandlerContext) -> None:
    """The order could not be charged: it is cancelled."""
    await _learn(deps, ctx, event.order_id, lambda o: o.paid(False, event.reason))


async def on_stock_reserved(deps: Deps, event: inventory_events.StockReserved, ctx: HandlerContext) -> None:
    """Every line is reserved: the order is confirmed."""
    await _learn(deps, ctx, event.order_id, lambda o: o.reserved(True))


async def on_stock_reservation_failed(
    deps: Deps, event: inventory_events.StockReservationFailed, ctx: HandlerContext
) -> None:
    """The stock was gone: the order is cancelled and refunded."""
    await _learn(deps, ctx, event.order_id, lambda o: o.reserved(False, event.reason or "OUT_OF_STOCK"))


async def on_points_redeemed(deps: Deps, event: loyalty_events.PointsRedeemed, ctx: HandlerContext) -> None:
    """The points the order spends were taken from the customer's balance."""
    await _learn(deps, ctx, event.order_id, lambda o: o.redeemed(True))


async def on_points_redemption_failed(
    deps: Deps, event: loyalty_events.PointsRedemptionFailed, ctx: HandlerContext
) -> None:
    """The customer had fewer points than the order spends: it is cancelled (and refunded)."""
    await _learn(deps, ctx, event.order_id, lambda o: o.redeemed(False, event.reason))


def an_artisan(event: identity_events.UserDeleted) -> bool:
    """The only accounts closed that orders acts on: artisans'."""
    return event.role == identity_events.USER_ROLE_ARTISAN


async def on_artisan_left(deps: Deps, event: identity_events.UserDeleted, ctx: HandlerContext) -> None:
    """An artisan closed their account: their orders not shipped yet are cancelled (ARTISAN_LEFT),
    refunded if they were charged, their stock released and their points given back. Those shipped
    go on: an admin records their delivery."""
    rows = await ctx.conn.fetch(
        "SELECT order_id::text FROM orders WHERE artisan_id = $1 AND status = ANY($2::text[])",
        event.user_id,
        [status.value for status in CANCELLABLE],
    )
    for row in rows:
        await _learn(deps, ctx, row["order_id"], lambda o: o.seller_left())


async def on_refund_issued(deps: Deps, event: payment_events.RefundIssued, ctx: HandlerContext) -> None:
    """The money went back to the customer."""
    await _learn(deps, ctx, event.order_id, lambda o: o.refund_done())


# Timeouts ---------------------------------------------------------------------------------------


async def expire_overdue(deps: Deps, cutoff: datetime | None = None, limit: int = 100) -> int:
    """Cancel orders whose saga step did not answer in time (its deadline before `cutoff`, by
    default now); returns how many."""
    changes: list[tuple[Order, Order]] = []
    async with deps.uow() as uow:
        for order in await uow.orders.due(cutoff or datetime.now(UTC), limit):
            reason = timeout_reason(order)
            if reason is None:
                continue
            with flow_scope(Flow(order.order_id, order.order_id, order.customer_id)):
                saved = await record(deps, uow.orders, uow.outbox.add, order, order.cancelled(reason))
            changes.append((order, saved))
    _entered(changes)
    return len(changes)


async def watch_timeouts(deps: Deps, interval_s: float = 0.5) -> None:
    """Run `expire_overdue` for ever, every `interval_s` seconds (a background job); after an
    outage of the database or of NATS, with the grace `TimeoutCutoff` gives the steps it held up."""
    timeouts = TimeoutCutoff(timedelta(seconds=max(deps.payment_timeout_s, deps.reservation_timeout_s)))

    async def sweep() -> None:
        now = datetime.now(UTC)
        if not deps.events_flowing():
            if timeouts.down_since is None:
                log.warning(
                    "the timeout sweep waits: orders is not connected to NATS, or JetStream does not answer"
                )
            timeouts.failed(now)
            return
        try:
            count = await expire_overdue(deps, timeouts.cutoff(now))
        except DEPENDENCY_OUTAGES:
            timeouts.failed(now)
            raise
        if (held := timeouts.worked(now)) is not None:
            before, until = held
            log.warning(
                "the timeout sweep works again: until %s, only steps due before %s time out",
                until.isoformat(timespec="seconds"),
                before.isoformat(timespec="seconds"),
            )
        if count:
            log.warning("cancelled %d orders whose saga step timed out", count)

    await every(interval_s, sweep, "the timeout sweep")


async def set_in_flight(orders: Orders) -> None:
    """Set the `a4co_orders_in_flight` gauge, and those of the returns waiting, from the database."""
    counts = await orders.count_in_flight()
    for status in IN_FLIGHT:
        ORDERS_IN_FLIGHT.labels(status.value).set(counts.get(status.value, 0))
    waiting, oldest = await orders.returns_waiting()
    RETURNS_WAITING.set(waiting)
    OLDEST_RETURN_WAITING.set((datetime.now(UTC) - oldest).total_seconds() if oldest else 0)


async def export_in_flight(deps: Deps, interval_s: float = 5.0) -> None:
    """Keep the `a4co_orders_in_flight` gauge and the returns' current (a background job)."""
    await every(interval_s, lambda: set_in_flight(deps.orders), "counting the orders in flight")
