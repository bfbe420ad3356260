"""inventory's tables through asyncpg."""

from __future__ import annotations

import asyncpg

from services.inventory.domain import StockLevel
from services.platform.db import Connection, columns
from services.platform.uow import PostgresUnitOfWork

_COLUMNS = "product_id, artisan_id, on_hand, reserved, low_stock_threshold, version, updated_at"
_STOCK_COLUMNS = ", ".join(f"stock.{column}" for column in _COLUMNS.split(", "))  # beside another table


def _level(row: asyncpg.Record) -> StockLevel:
    return StockLevel(
        product_id=row["product_id"],
        artisan_id=row["artisan_id"],
        on_hand=row["on_hand"],
        reserved=row["reserved"],
        low_stock_threshold=row["low_stock_threshold"],
        version=row["version"],
        updated_at=row["updated_at"],
    )


class Stock:
    """Stock levels in the `stock` table."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def get(self, product_id: str, *, for_update: bool = False) -> StockLevel | None:
        """One product's stock, locked when `for_update`."""
        lock = " FOR UPDATE" if for_update else ""
        row = await self.conn.fetchrow(
            f"SELECT {_COLUMNS} FROM stock WHERE product_id = $1{lock}", product_id
        )
        return _level(row) if row else None

    async def get_many(self, product_ids: list[str]) -> dict[str, StockLevel]:
        """Several products' stock."""
        rows = await self.conn.fetch(
            f"SELECT {_COLUMNS} FROM stock WHERE product_id = ANY($1::text[])", product_ids
        )
        return {row["product_id"]: _level(row) for row in rows}

    async def create(self, level: StockLevel) -> StockLevel | None:
        """Insert a new product's stock; None when it exists already."""
        row = await self.conn.fetchrow(
            "INSERT INTO stock (product_id, artisan_id, on_hand, low_stock_threshold)"
            f" VALUES ($1, $2, $3, $4) ON CONFLICT (product_id) DO NOTHING RETURNING {_COLUMNS}",
            level.product_id,
            level.artisan_id,
            level.on_hand,
            level.low_stock_threshold,
        )
        return _level(row) if row else None

    async def save(self, level: StockLevel) -> StockLevel:
        """Store quantities and threshold, bumping the version."""
        row = await self.conn.fetchrow(
            f"UPDATE stock SET on_hand = $2, reserved = $3, low_stock_threshold = $4, version = version + 1, "
            f"updated_at = now() WHERE product_id = $1 RETURNING {_COLUMNS}",
            level.product_id,
            level.on_hand,
            level.reserved,
            level.low_stock_threshold,
        )
        assert row is not None
        return _level(row)

    async def adjustment_seen(self, request_id: str) -> str | None:
        """The product of an adjustment already applied under this request id."""
        value = await self.conn.fetchval(
            "SELECT product_id FROM adjustments WHERE request_id = $1", request_id
        )
        return str(value) if value is not None else None

    async def record_adjustment(
        self, request_id: str, product_id: str, actor: str, delta: int, reason: str
    ) -> None:
        """Remember an applied adjustment, so that its retry is not applied again."""
        await self.conn.execute(
            "INSERT INTO adjustments (request_id, product_id, actor_id, delta, reason)"
            " VALUES ($1, $2, $3, $4, $5)",
            request_id,
            product_id,
            actor,
            delta,
            reason,
        )


class InventoryUnitOfWork(PostgresUnitOfWork):
    """Stock and the outbox in one transaction."""

    stock: Stock

    def bind(self, conn: Connection) -> None:
        """Build the repository."""
        self.stock = Stock(conn)


class Reservations:
    """Stock held for orders: reserved all lines or none, released, or committed on delivery."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def existing_and_locked(
        self, order_ids: list[str], product_ids: list[str]
    ) -> tuple[set[str], dict[str, StockLevel]]:
        """The orders among `order_ids` that were reserved before (whatever became of it), and the
        products' stock, locked in product order (so concurrent orders cannot deadlock): one
        statement, whose every row is a locked level, the first also carrying the orders found."""
        rows = await self.conn.fetch(
            f"WITH locked AS (SELECT {_COLUMNS} FROM stock WHERE product_id = ANY($2::text[])"
            " ORDER BY product_id FOR UPDATE),"
            " seen AS (SELECT coalesce(array_agg(DISTINCT order_id), '{}') AS orders FROM reservations"
            " WHERE order_id = ANY($1::text[]))"
            " SELECT seen.orders, locked.* FROM seen LEFT JOIN locked ON true ORDER BY locked.product_id",
            order_ids,
            product_ids,
        )
        seen = set(rows[0]["orders"]) if rows else set()
        return seen, {row["product_id"]: _level(row) for row in rows if row["product_id"] is not None}

    async def hold_many(
        self, held: list[tuple[str, str, int]], moves: dict[str, tuple[int, int]]
    ) -> list[StockLevel]:
        """Reserve (order, product, quantity) lines of locked products, and move each product's
        reserved units and version by `moves` ((units, changes)), with one statement."""
        rows = await self.conn.fetch(
            "WITH held AS (INSERT INTO reservations (order_id, product_id, quantity, status)"
            " SELECT o, p, q, 'held' FROM unnest($1::text[], $2::text[], $3::int[]) AS h(o, p, q))"
            " UPDATE stock SET reserved = stock.reserved + m.units, version = stock.version + m.changes,"
            " updated_at = now()"
            " FROM unnest($4::text[], $5::int[], $6::int[]) AS m(product_id, units, changes)"
            f" WHERE stock.product_id = m.product_id RETURNING {_STOCK_COLUMNS}",
            *columns(held, 3),
            *columns(((product, *moves[product]) for product in sorted(moves)), 3),
        )
        return [_level(row) for row in rows]

    async def held(self, order_id: str) -> list[tuple[str, int]]:
        """The order's held lines, locked."""
        rows = await self.conn.fetch(
            "SELECT product_id, quantity FROM reservations WHERE order_id = $1 AND status = 'held'"
            " ORDER BY product_id FOR UPDATE",
            order_id,
        )
        return [(r["product_id"], r["quantity"]) for r in rows]

    async def settle(self, order_id: str, product_id: str, quantity: int, *, committed: bool) -> StockLevel:
        """Release a held line back to stock, or commit it (the units left with the order)."""
        status = "committed" if committed else "released"
        await self.conn.execute(
            "UPDATE reservations SET status = $3, updated_at = now() WHERE order_id = $1 AND product_id = $2",
            order_id,
            product_id,
            status,
        )
        return await self._move(product_id, -quantity if committed else 0, -quantity)

    async def returnable(self, order_id: str) -> list[tuple[str, int, bool]]:
        """The lines of a returned order still held or committed, locked: (product, units, held)."""
        rows = await self.conn.fetch(
            "SELECT product_id, quantity, status = 'held' AS held FROM reservations"
            " WHERE order_id = $1 AND status IN ('held', 'committed') ORDER BY product_id FOR UPDATE",
            order_id,
        )
        return [(r["product_id"], r["quantity"], r["held"]) for r in rows]

    async def give_back(self, order_id: str, product_id: str, quantity: int, *, held: bool) -> StockLevel:
        """A returned order's line back in stock: a committed line's units on hand again, or a
        line still held (its delivery's commit not applied yet) released; either is 'returned',
        so that the commit then finds nothing held."""
        await self.conn.execute(
            "UPDATE reservations SET status = 'returned', updated_at = now()"
            " WHERE order_id = $1 AND product_id = $2",
            order_id,
            product_id,
        )
        return await self._move(product_id, 0 if held else quantity, -quantity if held else 0)

    async def _move(self, product_id: str, on_hand_delta: int, reserved_delta: int) -> StockLevel:
        row = await self.conn.fetchrow(
            f"UPDATE stock SET on_hand = on_hand + $2, reserved = reserved + $3, version = version + 1,"
            f" updated_at = now() WHERE product_id = $1 RETURNING {_COLUMNS}",
            product_id,
            on_hand_delta,
            reserved_delta,
        )
        assert row is not None
        return _level(row)
