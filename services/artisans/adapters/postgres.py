"""artisans' tables through asyncpg."""

from __future__ import annotations

import json
from datetime import datetime

import asyncpg

from services.artisans.domain import Listing, Product, Registered, Workshop
from services.platform.db import Connection, Queryable
from services.platform.paging import Page, page_sql
from services.platform.uow import PostgresUnitOfWork


def _registered(row: asyncpg.Record) -> Registered:
    address = row["address"]
    workshop = Workshop(
        row["artisan_id"],
        row["display_name"],
        row["craft"],
        row["locality"],
        row["latitude"],
        row["longitude"],
        json.loads(address) if isinstance(address, str) else dict(address),
        row["bio"],
    )
    onboarded = row["onboarded_at"]
    return Registered(
        workshop,
        onboarded,
        row["revision"],
        row["updated_at"] or onboarded,
        str(row["request_id"]),
        row["offboarded_at"],
    )


def _declared(w: Workshop) -> tuple[object, ...]:
    """What an artisan declares of a workshop, as the columns display_name, craft, locality,
    latitude, longitude, address (JSON) and bio."""
    return (w.display_name, w.craft, w.locality, w.latitude, w.longitude, json.dumps(w.address), w.bio)


def _listing(row: asyncpg.Record) -> Listing:
    product = Product(
        str(row["product_id"]),
        row["artisan_id"],
        row["name"],
        row["description"],
        row["category"],
        row["price_cents"],
        row["currency_code"],
        row["initial_stock"],
        row["low_stock_threshold"],
        row["return_exception"],
    )
    published = row["published_at"]
    updated = row["updated_at"] or published
    return Listing(product, published, row["revision"], updated, row["withdrawn_at"])


class Catalogue:
    """Workshops and products."""

    def __init__(self, conn: Queryable) -> None:
        self.conn = conn

    async def workshop(
        self, artisan_id: str, *, to_change: bool = False, to_sell: bool = False
    ) -> Registered | None:
        """A workshop and its history; with `to_change`, locked until the transaction ends, so that
        its changes are made one at a time; with `to_sell`, kept from changing (products are
        published meanwhile, but it cannot leave the marketplace until they are)."""
        lock = " FOR UPDATE" if to_change else " FOR SHARE" if to_sell else ""
        row = await self.conn.fetchrow(
            f"SELECT *, address::text AS address FROM workshops WHERE artisan_id = $1{lock}",
            artisan_id,
        )
        return _registered(row) if row else None

    async def update_workshop(self, w: Workshop, revision: int) -> Registered:
        """Store a workshop's fields as its `revision` (locked by `workshop(to_change=True)`)."""
        row = await self.conn.fetchrow(
            "UPDATE workshops SET display_name = $2, craft = $3, locality = $4, latitude = $5,"
            " longitude = $6, address = $7::jsonb, bio = $8, revision = $9, updated_at = now()"
            " WHERE artisan_id = $1 RETURNING *, address::text AS address",
            w.artisan_id,
            *_declared(w),
            revision,
        )
        assert row is not None  # the row is locked: it cannot have gone
        return _registered(row)

    async def offboard(self, artisan_id: str, revision: int) -> Registered:
        """Mark a workshop gone from the marketplace, as its `revision` (locked by
        `workshop(to_change=True)`)."""
        row = await self.conn.fetchrow(
            "UPDATE workshops SET offboarded_at = now(), updated_at = now(), revision = $2"
            " WHERE artisan_id = $1 RETURNING *, address::text AS address",
            artisan_id,
            revision,
        )
        assert row is not None  # the row is locked: it cannot have gone
        return _registered(row)

    async def onboard(self, w: Workshop, request_id: str) -> Registered | None:
        """Record a workshop; None when the artisan or the request id has one already (committed
        by a call that ran meanwhile: PostgreSQL waits for it, then skips)."""
        row = await self.conn.fetchrow(
            "INSERT INTO workshops (artisan_id, request_id, display_name, craft, locality, latitude,"
            " longitude, address, bio) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)"
            " ON CONFLICT DO NOTHING RETURNING *, address::text AS address",
            w.artisan_id,
            request_id,
            *_declared(w),
        )
        return _registered(row) if row else None

    async def product_by_request(self, request_id: str) -> Listing | None:
        """The product published under a request id."""
        row = await self.conn.fetchrow("SELECT * FROM products WHERE request_id = $1", request_id)
        return _listing(row) if row else None

    async def products_of(self, artisan_id: str, show_withdrawn: bool, page: Page) -> list[Listing]:
        """A page of an artisan's products, newest first (those on sale only, unless
        `show_withdrawn`)."""
        args: list[object] = [artisan_id]
        where = "artisan_id = $1" + ("" if show_withdrawn else " AND withdrawn_at IS NULL")
        where += page_sql(page, "published_at", "product_id", args)
        rows = await self.conn.fetch(f"SELECT * FROM products WHERE {where}", *args)
        return [_listing(row) for row in rows]

    async def product_to_change(self, product_id: str) -> Listing | None:
        """A product, locked until the transaction ends: its changes are made one at a time."""
        row = await self.conn.fetchrow("SELECT * FROM products WHERE product_id = $1 FOR UPDATE", product_id)
        return _listing(row) if row else None

    async def update(self, p: Product, revision: int) -> Listing:
        """Store a product's changed fields as its `revision` (locked by `product_to_change`)."""
        row = await self.conn.fetchrow(
            "UPDATE products SET name = $2, description = $3, category = $4, price_cents = $5,"
            " currency_code = $6, revision = $7, return_exception = $8, updated_at = now()"
            " WHERE product_id = $1 RETURNING *",
            p.product_id,
            p.name,
            p.description,
            p.category,
            p.price_cents,
            p.currency_code,
            revision,
            p.return_exception,
        )
        assert row is not None  # the row is locked: it cannot have gone
        return _listing(row)

    async def withdraw(self, product_id: str, revision: int) -> Listing:
        """Mark a product withdrawn from sale, as its `revision` (locked by `product_to_change`)."""
        row = await self.conn.fetchrow(
            "UPDATE products SET withdrawn_at = now(), updated_at = now(), revision = $2"
            " WHERE product_id = $1 RETURNING *",
            product_id,
            revision,
        )
        assert row is not None  # the row is locked: it cannot have gone
        return _listing(row)

    async def withdraw_all(self, artisan_id: str) -> list[Listing]:
        """Mark every product an artisan has on sale withdrawn, each as its next revision; a product
        being changed meanwhile is withdrawn once that change commits, from its revision then."""
        rows = await self.conn.fetch(
            "UPDATE products SET withdrawn_at = now(), updated_at = now(), revision = revision + 1"
            " WHERE artisan_id = $1 AND withdrawn_at IS NULL RETURNING *",
            artisan_id,
        )
        return [_listing(row) for row in rows]

    async def publish(self, p: Product, request_id: str) -> datetime | None:
        """Record a product; returns when, or None when its request id was taken meanwhile (by a
        call that committed while this one ran: PostgreSQL waits for it, then skips the row)."""
        moment: datetime | None = await self.conn.fetchval(
            "INSERT INTO products (product_id, request_id, artisan_id, name, description, category,"
            " price_cents, currency_code, initial_stock, low_stock_threshold, return_exception)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            " ON CONFLICT (request_id) DO NOTHING RETURNING published_at",
            p.product_id,
            request_id,
            p.artisan_id,
            p.name,
            p.description,
            p.category,
            p.price_cents,
            p.currency_code,
            p.initial_stock,
            p.low_stock_threshold,
            p.return_exception,
        )
        return moment


class ArtisansUnitOfWork(PostgresUnitOfWork):
    """Workshops, products and the outbox in one transaction."""

    catalogue: Catalogue

    def bind(self, conn: Connection) -> None:
        """Build the repository."""
        self.catalogue = Catalogue(conn)
