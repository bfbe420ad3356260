"""analytics' projections and reports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from a4co.orders.events.v1 import order_events_pb2 as order_events
from services.platform.auth import Principal, Role
from services.platform.db import Connection, columns
from services.platform.events.consumer import HandlerContext
from services.platform.validation import Violations


@dataclass(frozen=True, slots=True)
class Deps:
    """What the use cases are built with."""

    pool: asyncpg.Pool


@dataclass(frozen=True, slots=True)
class ProductLine:
    """One product's sales in a report."""

    product_id: str
    product_name: str
    units: int
    revenue_cents: int


@dataclass(frozen=True, slots=True)
class Report:
    """An artisan's sales over a period."""

    artisan_id: str
    placed: int
    delivered: int
    cancelled: int
    units: int
    gross_cents: int
    refunded_cents: int  # for the orders cancelled and returned in the period
    currency_code: str
    products: list[ProductLine]  # the best-selling ones
    unlisted_products: int = 0  # products sold in the period past those
    returned: int = 0


def _when(stamp: Timestamp, ctx: HandlerContext) -> datetime:
    if stamp.seconds:
        return stamp.ToDatetime(tzinfo=UTC)
    return ctx.event.envelope.occurred_at.ToDatetime(tzinfo=UTC)


async def _ensure(conn: Connection, order_id: str, artisan_id: str) -> None:
    await conn.execute(
        "INSERT INTO sales (order_id, artisan_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        order_id,
        artisan_id,
    )


async def _lines(conn: Connection, order_id: str, lines: list[order_events.OrderLine]) -> None:
    await conn.executemany(
        "INSERT INTO sale_lines (order_id, product_id, product_name, quantity, revenue_cents)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        [(order_id, x.product_id, x.product_name, x.quantity, x.line_total.amount_cents) for x in lines],
    )


@dataclass(frozen=True, slots=True)
class _Placed:
    """An order placed, waiting to be stored with the others of its transaction."""

    order_id: str
    artisan_id: str
    currency_code: str
    subtotal_cents: int
    total_cents: int
    placed_at: datetime
    lines: list[tuple[str, str, int, int]]  # product id and name, quantity, revenue in cents


async def on_order_created(deps: Deps, event: order_events.OrderCreated, ctx: HandlerContext) -> None:
    """An order placed: its amounts, lines and time."""
    placed = _Placed(
        event.order_id,
        event.artisan_id,
        event.total.currency_code or "EUR",
        event.subtotal.amount_cents,
        event.total.amount_cents,
        _when(event.create_time, ctx),
        [(x.product_id, x.product_name, x.quantity, x.line_total.amount_cents) for x in event.lines],
    )
    ctx.stage(_store_placed, placed)


async def _store_placed(conn: Connection, batch: list[_Placed]) -> None:
    """The orders a transaction's events placed, with two statements for all of them. A sale
    another event started first (a cancellation that overtook its order) gets the amounts and time."""
    orders = list({p.order_id: p for p in batch}.values())  # one row per order in an upsert
    await conn.execute(
        "INSERT INTO sales (order_id, artisan_id, currency_code, subtotal_cents, total_cents, placed_at)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],"
        " $6::timestamptz[])"
        " ON CONFLICT (order_id) DO UPDATE SET currency_code = EXCLUDED.currency_code,"
        " subtotal_cents = EXCLUDED.subtotal_cents, total_cents = EXCLUDED.total_cents,"
        " placed_at = EXCLUDED.placed_at",
        *columns(
            (
                (p.order_id, p.artisan_id, p.currency_code, p.subtotal_cents, p.total_cents, p.placed_at)
                for p in orders
            ),
            6,
        ),
    )
    await conn.execute(
        "INSERT INTO sale_lines (order_id, product_id, product_name, quantity, revenue_cents)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])"
        " ON CONFLICT DO NOTHING",
        *columns(((p.order_id, *line) for p in orders for line in p.lines), 5),
    )


# The status changes analytics records, and the columns of each: when, and what it gave back.
_UNDONE_COLUMNS = {
    order_events.ORDER_STATUS_CANCELLED: ("cancelled_at", "refunded_cents"),
    order_events.ORDER_STATUS_RETURNED: ("returned_at", "returned_cents"),
}


def undone(event: order_events.OrderStatusChanged) -> bool:
    """The only status changes analytics records: a cancellation, and a return."""
    return event.status in _UNDONE_COLUMNS


async def on_order_status_changed(
    deps: Deps, event: order_events.OrderStatusChanged, ctx: HandlerContext
) -> None:
    """A cancellation or a return, and what it gave back."""
    if not undone(event):
        return
    await _ensure(ctx.conn, event.order_id, event.artisan_id)
    refunded = event.total.amount_cents if event.refund_required else 0
    # A return is counted apart from a cancellation, each with its time and what it gave back.
    when, cents = _UNDONE_COLUMNS[event.status]
    await ctx.conn.execute(
        f"UPDATE sales SET {when} = coalesce({when}, $2), {cents} = greatest({cents}, $3)"  # noqa: S608 (constants)
        " WHERE order_id = $1",
        event.order_id,
        _when(event.change_time, ctx),
        refunded,
    )
    await _lines(ctx.conn, event.order_id, list(event.lines))


async def on_order_delivered(deps: Deps, event: order_events.OrderDelivered, ctx: HandlerContext) -> None:
    """A sale completed."""
    await _ensure(ctx.conn, event.order_id, event.artisan_id)
    await ctx.conn.execute(
        "UPDATE sales SET delivered_at = coalesce(delivered_at, $2) WHERE order_id = $1",
        event.order_id,
        _when(event.delivery_time, ctx),
    )
    await _lines(ctx.conn, event.order_id, list(event.lines))


def _reader(principal: Principal, artisan_id: str, start: datetime, end: datetime) -> str:
    """The artisan whose sales are read (the caller's own, or any for an admin), once the period
    is checked."""
    target = artisan_id or principal.user_id
    if principal.role is not Role.ADMIN:
        principal.require(Role.ARTISAN)
        principal.require_self_or_admin(target)
    v = Violations()
    v.check(start < end, "end_time", "must be after start_time")
    v.raise_if_any()
    return target


# The currency of the artisan's latest sale (EUR without one).
_CURRENCY = (
    "coalesce((SELECT currency_code FROM sales WHERE artisan_id = $1 AND placed_at IS NOT NULL"
    " ORDER BY placed_at DESC LIMIT 1), 'EUR')"
)


async def report(
    deps: Deps,
    principal: Principal,
    artisan_id: str,
    start: datetime,
    end: datetime,
    *,
    max_products: int = 100,
) -> Report:
    """An artisan's sales in [start, end), for that artisan or an admin, with its `max_products`
    best-selling products (the totals count them all)."""
    target = _reader(principal, artisan_id, start, end)
    # Each count reads only the period's rows, through its own index (schema.sql); over the whole
    # history of the artisan, a week's report of 1,512 orders among 225,000 took 80 ms.
    totals = await deps.pool.fetchrow(
        "WITH delivered AS (SELECT count(*) AS n, coalesce(sum(subtotal_cents), 0) AS gross FROM sales"  # noqa: S608 (constants; every value is bound)
        "  WHERE artisan_id = $1 AND delivered_at >= $2 AND delivered_at < $3),"
        " cancelled AS (SELECT count(*) AS n, coalesce(sum(refunded_cents), 0) AS refunded FROM sales"
        "  WHERE artisan_id = $1 AND cancelled_at >= $2 AND cancelled_at < $3),"
        " returned AS (SELECT count(*) AS n, coalesce(sum(returned_cents), 0) AS refunded FROM sales"
        "  WHERE artisan_id = $1 AND returned_at >= $2 AND returned_at < $3)"
        " SELECT (SELECT count(*) FROM sales WHERE artisan_id = $1 AND placed_at >= $2 AND placed_at < $3)"
        " AS placed, d.n AS delivered, c.n AS cancelled, r.n AS returned, d.gross,"
        f" c.refunded + r.refunded AS refunded, {_CURRENCY} AS currency"
        " FROM delivered d, cancelled c, returned r",
        target,
        start,
        end,
    )
    # The lines of the period's orders, looked up by their key: as a join, PostgreSQL read every
    # line of every artisan (a week of 1,512 orders over 300,000 lines: 33 against 2.2 ms).
    # The best-selling products, each row with the number of products and units of them all.
    rows = await deps.pool.fetch(
        "SELECT product_id, max(product_name) AS name, sum(quantity) AS units,"
        " sum(revenue_cents) AS revenue, count(*) OVER () AS sold, sum(sum(quantity)) OVER () AS all_units"
        " FROM sale_lines"
        " WHERE order_id = ANY(ARRAY(SELECT order_id FROM sales WHERE artisan_id = $1"
        "  AND delivered_at >= $2 AND delivered_at < $3))"
        " GROUP BY product_id ORDER BY units DESC, product_id LIMIT $4",
        target,
        start,
        end,
        max_products,
    )
    assert totals is not None
    products = [ProductLine(r["product_id"], r["name"], int(r["units"]), int(r["revenue"])) for r in rows]
    sold, units = (int(rows[0]["sold"]), int(rows[0]["all_units"])) if rows else (0, 0)
    return Report(
        target,
        int(totals["placed"]),
        int(totals["delivered"]),
        int(totals["cancelled"]),
        units,
        int(totals["gross"]),
        int(totals["refunded"]),
        totals["currency"],
        products,
        sold - len(products),
        int(totals["returned"]),
    )


@dataclass(frozen=True, slots=True)
class Bucket:
    """An artisan's sales in one day, week or month of a period: [start, end)."""

    start: datetime
    end: datetime
    placed: int = 0
    delivered: int = 0
    cancelled: int = 0
    units: int = 0
    gross_cents: int = 0
    refunded_cents: int = 0  # for the orders cancelled and returned in the bucket
    returned: int = 0


# Each sale counted in the bucket its own time falls in (`width_bucket` over the buckets' lower
# bounds: 1 for the first), each kind through its own index as in the report. The units of a
# delivered order are its lines', looked up by its key (a join read every line of every artisan).
_SERIES_SQL = f"""
SELECT 'placed' AS kind, width_bucket(placed_at, $4::timestamptz[]) AS k, count(*) AS n,
       0::bigint AS cents, 0::bigint AS units
  FROM sales WHERE artisan_id = $1 AND placed_at >= $2 AND placed_at < $3 GROUP BY k
UNION ALL
SELECT 'delivered', width_bucket(s.delivered_at, $4::timestamptz[]) AS k, count(*),
       sum(s.subtotal_cents)::bigint, sum(l.units)::bigint
  FROM sales s CROSS JOIN LATERAL (
    SELECT coalesce(sum(quantity), 0) AS units FROM sale_lines WHERE sale_lines.order_id = s.order_id
  ) l
  WHERE s.artisan_id = $1 AND s.delivered_at >= $2 AND s.delivered_at < $3 GROUP BY k
UNION ALL
SELECT 'cancelled', width_bucket(cancelled_at, $4::timestamptz[]) AS k, count(*),
       sum(refunded_cents)::bigint, 0::bigint
  FROM sales WHERE artisan_id = $1 AND cancelled_at >= $2 AND cancelled_at < $3 GROUP BY k
UNION ALL
SELECT 'returned', width_bucket(returned_at, $4::timestamptz[]) AS k, count(*),
       sum(returned_cents)::bigint, 0::bigint
  FROM sales WHERE artisan_id = $1 AND returned_at >= $2 AND returned_at < $3 GROUP BY k
UNION ALL
SELECT {_CURRENCY}, -1, 0, 0, 0
"""  # noqa: S608 (constants; every value is bound)


async def series(
    deps: Deps, principal: Principal, artisan_id: str, lows: list[datetime], end: datetime
) -> tuple[str, str, list[Bucket]]:
    """An artisan's sales by bucket of [lows[0], end) (`lows`: the buckets' lower bounds,
    `periods.bounds`), for that artisan or an admin; with the artisan and the currency."""
    start = lows[0]
    target = _reader(principal, artisan_id, start, end)
    found: dict[int, dict[str, tuple[int, int, int]]] = {}
    currency = "EUR"
    for row in await deps.pool.fetch(_SERIES_SQL, target, start, end, lows):
        if row["k"] == -1:  # the currency's row
            currency = row["kind"]
        else:  # 1 and up: every sale counted is in the period
            found.setdefault(row["k"], {})[row["kind"]] = (
                int(row["n"]),
                int(row["cents"]),
                int(row["units"]),
            )
    buckets = []
    for k, (low, high) in enumerate(zip(lows, [*lows[1:], end], strict=True), start=1):
        counts = found.get(k, {})
        placed, _, _ = counts.get("placed", (0, 0, 0))
        delivered, gross, units = counts.get("delivered", (0, 0, 0))
        cancelled, refunded, _ = counts.get("cancelled", (0, 0, 0))
        returned, given_back, _ = counts.get("returned", (0, 0, 0))
        buckets.append(
            Bucket(low, high, placed, delivered, cancelled, units, gross, refunded + given_back, returned)
        )
    return target, currency, buckets
