"""The event tables every service schema holds: the outbox and the inbox."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import asyncpg

from services.platform.outages import DATABASE_FAILURES

if TYPE_CHECKING:
    from services.platform.db import Connection

EVENT_TABLES_DDL = """
CREATE TABLE IF NOT EXISTS outbox (
    id          bigserial   PRIMARY KEY,
    event_id    uuid        NOT NULL UNIQUE,
    event_type  text        NOT NULL,
    aggregate_id text       NOT NULL,
    subject     text        NOT NULL,
    headers     jsonb       NOT NULL,
    body        bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS inbox (
    consumer    text        NOT NULL,
    event_id    uuid        NOT NULL,
    event_type  text        NOT NULL,
    handled_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS inbox_handled_at ON inbox (handled_at);
"""


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


async def ensure_schema(conn: asyncpg.Connection, schema: str) -> None:
    """Create a service's schema and its event tables; idempotent."""
    # Serialised with an advisory lock: replicas starting together would otherwise race on
    # CREATE ... IF NOT EXISTS, which is not safe under concurrency in PostgreSQL.
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"a4co-ddl:{schema}")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        await conn.execute(f"SET LOCAL search_path TO {quote_ident(schema)}")
        await conn.execute(EVENT_TABLES_DDL)


async def prune_inbox(conn: Connection, older_than_s: float) -> int:
    """Forget inbox entries older than the streams keep events; returns how many were deleted.

    An event can only be redelivered while its stream holds it, so entries older than the
    stream's max age can never stop a duplicate again.
    """
    status = await conn.execute(
        "DELETE FROM inbox WHERE handled_at < clock_timestamp() - make_interval(secs => $1)",
        older_than_s,
    )
    return int(status.split()[-1])


async def keep_inbox_pruned(pool: asyncpg.Pool, older_than_s: float, interval_s: float = 3600.0) -> None:
    """Prune the inbox now and every `interval_s` seconds, for ever (a background job)."""
    log = logging.getLogger(__name__)
    while True:
        try:
            async with pool.acquire() as conn:
                pruned = await prune_inbox(conn, older_than_s)
            if pruned:
                log.info("pruned %d inbox entries older than the streams keep events", pruned)
        except DATABASE_FAILURES:  # the next round tries again
            log.warning("inbox pruning failed; retrying in %.0f s", interval_s)
        await asyncio.sleep(interval_s)  # the pruning period
