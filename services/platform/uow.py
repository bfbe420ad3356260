"""The unit of work on PostgreSQL: one transaction for a use case's reads, writes and events."""

from __future__ import annotations

from types import TracebackType
from typing import Self

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from google.protobuf.message import Message

from services.platform.db import Connection
from services.platform.events.codec import OutgoingEvent
from services.platform.events.outbox import OutboxWriter


class TransactionalOutbox:
    """The outbox bound to one transaction: `add` publishes when that transaction commits."""

    def __init__(self, writer: OutboxWriter, conn: Connection) -> None:
        self._writer, self._conn = writer, conn
        self.added: list[OutgoingEvent] = []

    async def add(self, event: Message, *, aggregate_id: str, ttl_s: float | None = None) -> None:
        """Add `event` to this transaction's outbox (`ttl_s`: how long its message stays in its
        stream, for an event declared `expires`)."""
        out = await self._writer.add(
            self._conn, event, aggregate_id=aggregate_id, wake_after_commit=True, ttl_s=ttl_s
        )
        self.added.append(out)


class PostgresUnitOfWork:
    """`async with uow:` opens a transaction; it commits when the block ends without error.

    Services subclass it and build their repositories in `bind(conn)`.
    """

    def __init__(self, pool: asyncpg.Pool, writer: OutboxWriter) -> None:
        self._pool, self._writer = pool, writer
        self._conn: PoolConnectionProxy[asyncpg.Record] | None = None
        self._tx: asyncpg.transaction.Transaction | None = None

    @property
    def conn(self) -> Connection:
        """The open transaction's connection."""
        assert self._conn is not None, "use the unit of work inside `async with`"
        return self._conn

    def bind(self, conn: Connection) -> None:
        """Build repositories on the transaction's connection; overridden by services."""

    async def __aenter__(self) -> Self:
        self._conn = await self._pool.acquire()
        self._tx = self._conn.transaction()
        await self._tx.start()
        self.outbox = TransactionalOutbox(self._writer, self._conn)
        self.bind(self._conn)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tx is not None
        assert self._conn is not None
        try:
            if exc_type is None:
                await self._tx.commit()
                if self.outbox.added:
                    self._writer.committed(self.outbox.added)
            else:
                await self._tx.rollback()
        finally:
            await self._pool.release(self._conn)
            self._conn = self._tx = None
