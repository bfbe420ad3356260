"""payments' tables through asyncpg."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.payments.domain import Brand, MethodType
from services.platform.coalesce import Coalescer
from services.platform.db import Connection, Queryable, columns
from services.platform.kept import Kept
from services.platform.paging import Page, page_sql
from services.platform.uow import PostgresUnitOfWork
from services.platform.validation import is_uuid


@dataclass(frozen=True, slots=True)
class StoredMethod:
    """A payment method as kept: a token and the last four characters; when it was stored
    (None before it is) and deleted (None while it can be used)."""

    payment_method_id: str
    customer_id: str
    method_type: MethodType
    brand: Brand
    last_four: str
    provider_token: str
    created_at: datetime | None = None
    deleted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One order's payment attempt: a charge (`reference`) or a refusal (`failure_reason`)."""

    payment_id: str
    order_id: str
    customer_id: str
    method: StoredMethod | None
    amount_cents: int
    currency_code: str
    reference: str = ""
    failure_reason: str = ""

    @property
    def status(self) -> str:
        """As stored: succeeded or failed."""
        return "succeeded" if self.reference else "failed"


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    """One order's payment."""

    payment_id: str
    order_id: str
    customer_id: str
    amount_cents: int
    currency_code: str
    refunded_cents: int
    status: str
    method_type: str
    last_four: str
    provider_reference: str
    failure_reason: str
    created_at: datetime
    updated_at: datetime


def _payment(row: asyncpg.Record) -> PaymentRecord:
    return PaymentRecord(
        payment_id=str(row["payment_id"]),
        order_id=row["order_id"],
        customer_id=row["customer_id"],
        amount_cents=row["amount_cents"],
        currency_code=row["currency_code"],
        refunded_cents=row["refunded_cents"],
        status=row["status"],
        method_type=row["method_type"],
        last_four=row["last_four"],
        provider_reference=row["provider_reference"],
        failure_reason=row["failure_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class Methods:
    """Payment methods in `payment_methods`. A method's token and owner never change, so with
    `remember` the methods read last (up to that many) are kept in memory, and charged from there
    (`get_many`). A method may be deleted, by the customer on any replica, so a replica goes on
    answering for one it read (`get`) for at most `kept_s` seconds: a deletion stops new orders
    that much after it is recorded."""

    def __init__(self, conn: Queryable, *, remember: int = 0, kept_s: float = 2.0) -> None:
        self.conn = conn
        self.kept_s = kept_s
        self._kept: Kept[str, StoredMethod] = Kept(remember)
        pooled = isinstance(conn, asyncpg.Pool)
        self._adds = Coalescer("payment_methods_added", self._insert) if pooled else None

    async def add(self, method: StoredMethod) -> None:
        """Keep a tokenised method: on the pool, with the methods of the calls waiting meanwhile
        in one statement (decision 28); in a transaction, at once."""
        if self._adds is None:
            await self._insert([method])
        else:
            await self._adds.put([method])

    async def _insert(self, methods: list[StoredMethod]) -> Mapping[StoredMethod, None]:
        """The methods with one statement; a method's fields cannot fail it alone (its id is new,
        its type and brand come from their enums)."""
        await self.conn.execute(
            "INSERT INTO payment_methods (payment_method_id, customer_id, method_type, brand, last_four,"
            " provider_token) SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[],"
            " $5::text[], $6::text[])",
            *columns(
                (
                    (
                        m.payment_method_id,
                        m.customer_id,
                        m.method_type.value,
                        m.brand.value,
                        m.last_four,
                        m.provider_token,
                    )
                    for m in methods
                ),
                6,
            ),
        )
        return {}

    async def get(self, payment_method_id: str) -> StoredMethod | None:
        """A kept method, deleted or not, as read at most `kept_s` ago (None for an id that is
        not even a UUID)."""
        if (kept := self._kept.get(payment_method_id, self.kept_s)) is not None:
            return kept
        if not is_uuid(payment_method_id):
            return None
        row = await self.conn.fetchrow(
            "SELECT * FROM payment_methods WHERE payment_method_id = $1::uuid", payment_method_id
        )
        if row is None:
            return None
        method = _method(row)
        self._kept.renew(method.payment_method_id, method)
        return method

    async def delete(self, payment_method_id: str) -> StoredMethod | None:
        """Mark a stored method deleted (its first deletion's time kept; None when the table has
        no such method); this replica reads it from the table next time."""
        row = await self.conn.fetchrow(
            "UPDATE payment_methods SET deleted_at = coalesce(deleted_at, now())"
            " WHERE payment_method_id = $1::uuid RETURNING *",
            payment_method_id,
        )
        self._kept.forget(payment_method_id)
        return _method(row) if row else None

    async def page(self, customer_id: str, page: Page) -> list[StoredMethod]:
        """A page of a customer's methods not deleted, newest first."""
        args: list[object] = [customer_id]
        rest = page_sql(page, "created_at", "payment_method_id", args)
        rows = await self.conn.fetch(
            f"SELECT * FROM payment_methods WHERE customer_id = $1 AND deleted_at IS NULL{rest}", *args
        )
        return [_method(row) for row in rows]

    async def get_many(
        self, payment_method_ids: list[str], *, conn: Queryable | None = None
    ) -> dict[str, StoredMethod]:
        """Kept methods by id: those read before from memory, the others with one statement on
        `conn` (a transaction's) or this object's own; ids not found (or not UUIDs) are absent."""
        found: dict[str, StoredMethod] = {}
        missing = []
        for payment_method_id in sorted(set(payment_method_ids)):
            if (kept := self._kept.get(payment_method_id)) is not None:  # any age: charged alike
                found[payment_method_id] = kept
            elif is_uuid(payment_method_id):
                missing.append(payment_method_id)
        if missing:
            rows = await (conn or self.conn).fetch(
                "SELECT * FROM payment_methods WHERE payment_method_id = ANY($1::uuid[])", missing
            )
            for row in rows:
                method = _method(row)
                found[method.payment_method_id] = method
                self._kept.renew(method.payment_method_id, method)
        return found


def _attempt_row(a: Attempt) -> tuple[object, ...]:
    """An attempt as its `payments` row; the method's columns are empty when it is unknown."""
    m = a.method
    return (
        a.payment_id,
        a.order_id,
        a.customer_id,
        m.payment_method_id if m else None,
        a.amount_cents,
        a.currency_code,
        a.status,
        m.method_type.value if m else "",
        m.last_four if m else "",
        a.reference,
        a.failure_reason,
    )


def _method(row: asyncpg.Record) -> StoredMethod:
    return StoredMethod(
        str(row["payment_method_id"]),
        row["customer_id"],
        MethodType(row["method_type"]),
        Brand(row["brand"]),
        row["last_four"],
        row["provider_token"],
        row["created_at"],
        row["deleted_at"],
    )


class Payments:
    """Charges in `payments`."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def by_order(self, order_id: str) -> PaymentRecord | None:
        """The payment of an order."""
        row = await self.conn.fetchrow("SELECT * FROM payments WHERE order_id = $1", order_id)
        return _payment(row) if row else None


class PaymentsUnitOfWork(PostgresUnitOfWork):
    """Methods, payments and the outbox in one transaction."""

    methods: Methods
    payments: Payments

    def bind(self, conn: Connection) -> None:
        """Build the repositories."""
        self.methods = Methods(conn)
        self.payments = Payments(conn)


class Charges:
    """Writes of the saga: one payment per order, then its refund."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def attempted(self, order_ids: list[str]) -> set[str]:
        """The orders among these that were charged or refused already (once per order)."""
        rows = await self.conn.fetch(
            "SELECT order_id FROM payments WHERE order_id = ANY($1::text[])", order_ids
        )
        return {row["order_id"] for row in rows}

    async def record(self, attempts: list[Attempt]) -> set[str]:
        """Record each order's one payment attempt, with one statement; returns the orders
        recorded now (an order that has an attempt already keeps it)."""
        rows = await self.conn.fetch(
            "INSERT INTO payments (payment_id, order_id, customer_id, payment_method_id, amount_cents,"
            " currency_code, status, method_type, last_four, provider_reference, failure_reason)"
            " SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::bigint[],"
            " $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])"
            " ON CONFLICT (order_id) DO NOTHING RETURNING order_id",
            *columns((_attempt_row(a) for a in attempts), 11),
        )
        return {row["order_id"] for row in rows}

    async def for_refund(self, order_id: str) -> PaymentRecord | None:
        """An order's succeeded payment, locked; None when there is nothing to refund."""
        row = await self.conn.fetchrow(
            "SELECT * FROM payments WHERE order_id = $1 AND status = 'succeeded' FOR UPDATE", order_id
        )
        return _payment(row) if row else None

    async def refunded(self, order_id: str, amount_cents: int) -> None:
        """Mark an order's payment as refunded."""
        await self.conn.execute(
            "UPDATE payments SET status = 'refunded', refunded_cents = $2, updated_at = now()"
            " WHERE order_id = $1",
            order_id,
            amount_cents,
        )
