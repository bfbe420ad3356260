"""orders' table through asyncpg."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime

import asyncpg

from services.orders.domain import Line, Order, Outcome, ProductInfo, Status
from services.platform.db import Connection, Queryable, columns
from services.platform.events.codec import OutgoingEvent
from services.platform.events.outbox import OutboxWriter
from services.platform.kept import Kept
from services.platform.paging import Page, page_sql
from services.platform.uow import PostgresUnitOfWork
from services.platform.validation import is_uuid


def _order(row: asyncpg.Record) -> Order:
    lines = tuple(Line(**line) for line in json.loads(row["lines"]))
    return Order(
        order_id=str(row["order_id"]),
        customer_id=row["customer_id"],
        artisan_id=row["artisan_id"],
        lines=lines,
        delivery_fee_cents=row["delivery_fee_cents"],
        payment_method_id=row["payment_method_id"],
        delivery_address=json.loads(row["delivery_address"]),
        delivery_lat=row["delivery_lat"],
        delivery_lng=row["delivery_lng"],
        request_id=row["request_id"],
        currency_code=row["currency_code"],
        payment=Outcome(row["payment"]),
        payment_reason=row["payment_reason"],
        stock=Outcome(row["stock"]),
        stock_reason=row["stock_reason"],
        points_redeemed=row["points_redeemed"],
        points=Outcome(row["points"]),
        points_reason=row["points_reason"],
        cancel_reason=row["cancel_reason"],
        cancel_note=row["cancel_note"],
        shipped=row["shipped"],
        delivered=row["delivered"],
        refunded=row["refunded"],
        delivered_at=row["delivered_at"],
        return_requested_at=row["return_requested_at"],
        return_note=row["return_note"],
        returned_at=row["returned_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        step_deadline=row["step_deadline"],
        version=row["version"],
    )


_COLUMNS = "*, lines::text AS lines, delivery_address::text AS delivery_address"
_SELECT = f"SELECT {_COLUMNS} FROM orders"
IN_FLIGHT_SQL = "SELECT status, count(*) AS n FROM orders WHERE status IN ('PENDING', 'PAID') GROUP BY status"
RETURNS_WAITING_SQL = (
    "SELECT count(*) AS n, min(return_requested_at) AS oldest FROM orders WHERE status = 'RETURN_REQUESTED'"
)
# The same columns from an UPDATE … FROM another relation, whose own columns must not be returned.
_UPDATED_COLUMNS = "orders.*, orders.lines::text AS lines, orders.delivery_address::text AS delivery_address"


# What the saga and the calls change of an order: its columns and their types, in `_facts`' order.
_FACTS = (
    ("payment", "text"),
    ("payment_reason", "text"),
    ("stock", "text"),
    ("stock_reason", "text"),
    ("cancel_reason", "text"),
    ("cancel_note", "text"),
    ("shipped", "bool"),
    ("delivered", "bool"),
    ("refunded", "bool"),
    ("status", "text"),
    ("step_deadline", "timestamptz"),
    ("delivered_at", "timestamptz"),
    ("return_requested_at", "timestamptz"),
    ("return_note", "text"),
    ("returned_at", "timestamptz"),
    ("points", "text"),
    ("points_reason", "text"),
)
# Several orders' facts written with one statement, each order's row from the arrays' same place.
_SAVE_MANY_SQL = (
    "UPDATE orders SET "
    + ", ".join(f"{name} = u.{name}" for name, _ in _FACTS)
    + ", version = orders.version + 1, updated_at = now() FROM unnest($1::uuid[], "
    + ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(_FACTS, start=2))
    + ") AS u(order_id, "
    + ", ".join(name for name, _ in _FACTS)
    + f") WHERE orders.order_id = u.order_id RETURNING {_UPDATED_COLUMNS}"
)


def _facts(o: Order) -> tuple[object, ...]:
    """The order's id and what the saga and the calls change of it, in `_FACTS`' order."""
    return (
        o.order_id,
        o.payment.value,
        o.payment_reason,
        o.stock.value,
        o.stock_reason,
        o.cancel_reason,
        o.cancel_note,
        o.shipped,
        o.delivered,
        o.refunded,
        o.status.value,
        o.step_deadline,
        o.delivered_at,
        o.return_requested_at,
        o.return_note,
        o.returned_at,
        o.points.value,
        o.points_reason,
    )


class Orders:
    """Orders in the `orders` table."""

    def __init__(self, conn: Queryable) -> None:
        self.conn = conn

    async def add(self, order: Order, writer: OutboxWriter, events: Sequence[OutgoingEvent]) -> Order | None:
        """Store a new order and its events with one statement (on the pool: no BEGIN or COMMIT);
        None, and no event, when it is stored already (its id, or the customer's request id)."""
        rows = await writer.change_with(
            self.conn,
            "INSERT INTO orders (order_id, customer_id, artisan_id, request_id, lines, currency_code,"
            " delivery_fee_cents, total_cents, payment_method_id, delivery_address, delivery_lat,"
            " delivery_lng, status, step_deadline, created_at, updated_at, points_redeemed)"
            " VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10::jsonb, $11, $12, $13, $14, $15, $15,"
            " $16)"
            f" ON CONFLICT DO NOTHING RETURNING {_COLUMNS}",
            (
                order.order_id,
                order.customer_id,
                order.artisan_id,
                order.request_id,
                json.dumps([_line(line) for line in order.lines]),
                order.currency_code,
                order.delivery_fee_cents,
                order.total_cents,
                order.payment_method_id,
                json.dumps(order.delivery_address),
                order.delivery_lat,
                order.delivery_lng,
                order.status.value,
                order.step_deadline,
                order.created_at,
                order.points_redeemed,
            ),
            events,
        )
        return _order(rows[0]) if rows else None

    async def get(self, order_id: str, *, for_update: bool = False) -> Order | None:
        """One order, locked until the transaction ends when `for_update`."""
        lock = " FOR UPDATE" if for_update else ""
        try:
            row = await self.conn.fetchrow(f"{_SELECT} WHERE order_id = $1::uuid{lock}", order_id)
        except asyncpg.DataError:
            return None  # not a UUID: no such order
        return _order(row) if row else None

    async def lock_many(self, order_ids: Iterable[str]) -> dict[str, Order]:
        """Orders by id, locked until the transaction ends. Rows are locked in id order, so two
        transactions that lock several orders cannot deadlock; ids not found (or not UUIDs) are
        absent."""
        valid = sorted({i for i in order_ids if is_uuid(i)})
        rows = await self.conn.fetch(
            f"{_SELECT} WHERE order_id = ANY($1::uuid[]) ORDER BY order_id FOR UPDATE", valid
        )
        return {str(row["order_id"]): _order(row) for row in rows}

    async def by_request(self, customer_id: str, request_id: str) -> Order | None:
        """The order a customer placed under a request id, whatever its id."""
        row = await self.conn.fetchrow(
            f"{_SELECT} WHERE customer_id = $1 AND request_id = $2", customer_id, request_id
        )
        return _order(row) if row else None

    async def save(self, order: Order) -> Order:
        """Store the facts and the status they add up to."""
        (saved,) = await self.save_many([order])
        return saved

    async def save_many(self, orders: list[Order]) -> list[Order]:
        """Store the facts and statuses of several orders (each once) with one statement."""
        rows = await self.conn.fetch(_SAVE_MANY_SQL, *columns((_facts(o) for o in orders), 1 + len(_FACTS)))
        return [_order(row) for row in rows]

    async def page(self, column: str | None, owner: str, status: Status | None, page: Page) -> list[Order]:
        """A page of a customer's or an artisan's (`column`) orders, or of every order (None),
        newest first: each through its `*_pages` index, a status filtering the rows it walks."""
        assert column in ("customer_id", "artisan_id", None)
        args: list[object] = []
        where = ["true"]
        if column is not None:
            args.append(owner)
            where.append(f"{column} = ${len(args)}")
        if status is not None:
            args.append(status.value)
            where.append(f"status = ${len(args)}")
        rows = await self.conn.fetch(
            f"{_SELECT} WHERE {' AND '.join(where)}{page_sql(page, 'created_at', 'order_id', args)}", *args
        )
        return [_order(r) for r in rows]

    async def count_in_flight(self) -> dict[str, int]:
        """How many orders are PENDING and PAID: read through the `orders_waiting` partial index
        (its predicate is the query's), so the count costs what the sagas in flight do, not what
        the whole table does."""
        return {r["status"]: int(r["n"]) for r in await self.conn.fetch(IN_FLIGHT_SQL)}

    async def returns_waiting(self) -> tuple[int, datetime | None]:
        """How many returns wait for their goods, and when the oldest was asked for: through the
        `orders_returns_pages` partial index, as `count_in_flight` through `orders_waiting`."""
        row = await self.conn.fetchrow(RETURNS_WAITING_SQL)
        assert row is not None
        return int(row["n"]), row["oldest"]

    async def due(self, now: datetime, limit: int) -> list[Order]:
        """Orders waiting for a saga step whose deadline passed, locked, skipping those others hold."""
        rows = await self.conn.fetch(
            f"{_SELECT} WHERE status IN ('PENDING', 'PAID') AND step_deadline < $1"
            " ORDER BY step_deadline LIMIT $2 FOR UPDATE SKIP LOCKED",
            now,
            limit,
        )
        return [_order(r) for r in rows]


class Products:
    """orders' copy of the products on sale, filled from ProductPublished, ProductUpdated and
    ProductWithdrawn: what a new order's lines cost and who sells them, without asking catalog.

    With `remember`, the products read or added last (up to that many) are also kept in memory
    and read from there for `kept_s` seconds. A product may change, and another replica may be
    the one that records its change, so a replica goes on using what it read for at most that
    long: a new price or a withdrawal applies to new orders that much after orders records it.
    """

    def __init__(self, conn: Queryable, *, remember: int = 0, kept_s: float = 2.0) -> None:
        self.conn = conn
        self.kept_s = kept_s
        self._kept: Kept[str, ProductInfo] = Kept(remember)

    async def get_many(self, product_ids: Iterable[str]) -> dict[str, ProductInfo]:
        """The products of `product_ids` that orders knows, by id."""
        found, wanted = {}, []
        for product_id in product_ids:
            if (kept := self._kept.get(product_id, self.kept_s)) is not None:
                found[product_id] = kept
            else:
                wanted.append(product_id)
        if wanted:
            rows = await self.conn.fetch(
                "SELECT product_id, artisan_id, name, price_cents, currency_code, withdrawn, return_exception"
                " FROM products WHERE product_id = ANY($1::text[])",
                wanted,
            )
            for row in rows:
                found[row["product_id"]] = product = ProductInfo(**dict(row.items()))
                self._kept.renew(product.product_id, product)
        return found

    def forget(self, product_id: str) -> None:
        """Read a product from the table next time (this replica recorded a change of it)."""
        self._kept.forget(product_id)

    async def add(self, products: Iterable[ProductInfo]) -> None:
        """Keep products as catalog answered for them, their events not come yet (as revision 0:
        any event of theirs replaces them); a product kept already stays as it is."""
        found = list({p.product_id: p for p in products}.values())
        await self.conn.execute(
            "INSERT INTO products (product_id, artisan_id, name, price_cents, currency_code,"
            " return_exception, revision) SELECT *, 0 FROM unnest($1::text[], $2::text[], $3::text[],"
            " $4::bigint[], $5::text[], $6::text[]) ON CONFLICT (product_id) DO NOTHING",
            *columns(
                (
                    (p.product_id, p.artisan_id, p.name, p.price_cents, p.currency_code, p.return_exception)
                    for p in found
                ),
                6,
            ),
        )
        for product in found:
            self._kept.renew(product.product_id, product)

    async def change(self, product: ProductInfo, revision: int) -> None:
        """Record a product as of its `revision`; an older revision than the one recorded changes
        nothing, whatever order they arrive in."""
        await self.conn.execute(
            "INSERT INTO products (product_id, artisan_id, name, price_cents, currency_code, withdrawn,"
            " revision, return_exception) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (product_id) DO UPDATE SET"
            " artisan_id = EXCLUDED.artisan_id, name = EXCLUDED.name, price_cents = EXCLUDED.price_cents,"
            " currency_code = EXCLUDED.currency_code, withdrawn = EXCLUDED.withdrawn,"
            " revision = EXCLUDED.revision, return_exception = EXCLUDED.return_exception"
            " WHERE products.revision < EXCLUDED.revision",
            product.product_id,
            product.artisan_id,
            product.name,
            product.price_cents,
            product.currency_code,
            product.withdrawn,
            revision,
            product.return_exception,
        )


def _line(line: Line) -> dict[str, object]:
    return {
        "product_id": line.product_id,
        "product_name": line.product_name,
        "quantity": line.quantity,
        "unit_price_cents": line.unit_price_cents,
        "return_exception": line.return_exception,
    }


class OrdersUnitOfWork(PostgresUnitOfWork):
    """Orders and the outbox in one transaction."""

    orders: Orders

    def bind(self, conn: Connection) -> None:
        """Build the repository."""
        self.orders = Orders(conn)
