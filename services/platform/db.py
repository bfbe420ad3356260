"""PostgreSQL access shared by the services: one pool per service, bound to its own schema."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.platform import keepalive
from services.platform.events.tables import ensure_schema, quote_ident

Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
# What a repository runs its statements on: a transaction's connection, or the pool itself when a
# use case needs a single statement (its own implicit transaction, one round trip).
Queryable: TypeAlias = "Connection | asyncpg.Pool"


def columns(rows: Iterable[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as one list per column: the arguments of `unnest($1::a[], $2::b[], …)`, which writes
    many rows with one statement. `width` is the number of columns, for when there is no row."""
    found = [list(column) for column in zip(*rows, strict=True)]
    return found or [[] for _ in range(width)]


def literal(text: str) -> str:
    """`text` as an SQL string constant, for the few statements sent without parameters (several
    statements in one round trip; see `QueueConsumer._begin`).

    With `standard_conforming_strings` on, which every pool sets, a quote doubled is the only
    escape a constant needs. PostgreSQL text cannot hold NUL, which is refused here.
    """
    if "\x00" in text:
        raise ValueError("an SQL constant cannot hold NUL")
    return "'" + text.replace("'", "''") + "'"


def detect_dead_peer(conn: asyncpg.Connection[Any]) -> None:
    """Turn on the socket's dead-peer detection (services/platform/keepalive.py) for a TCP
    connection; a Unix socket's peer cannot vanish so.

    asyncpg has no option for it (MagicStack/asyncpg#606). Measured (a network namespace whose
    127.0.0.1 became a blackhole route): a SELECT 1 sent and a LISTEN waiting failed after 30.3 and
    30.6 s; without it, both still waited after 150 s (decision 74).
    """
    # asyncpg gives no other way to its socket.
    sock = conn._transport.get_extra_info("socket")  # type: ignore[attr-defined]
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in keepalive.tcp_options().items():
        sock.setsockopt(socket.IPPROTO_TCP, option, value)


async def connect(dsn: str, **options: Any) -> asyncpg.Connection[Any]:
    """`asyncpg.connect`, the connection's dead-peer detection turned on (`detect_dead_peer`): for
    a connection of its own (a LISTEN, a session lock)."""
    conn: asyncpg.Connection[Any] = await asyncpg.connect(dsn, **options)
    detect_dead_peer(conn)
    return conn


async def _pooled(conn: asyncpg.Connection[Any]) -> None:
    detect_dead_peer(conn)


async def create_pool(
    dsn: str,
    schema: str,
    *,
    application: str = "a4co",
    min_size: int = 1,
    max_size: int = 10,
) -> asyncpg.Pool:
    """Create the schema and its event tables if needed, then a pool whose search_path is it.

    SQL in a service is therefore unqualified; one schema per service keeps tables apart.
    """
    conn = await connect(dsn)
    try:
        await ensure_schema(conn, schema)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        # public holds the extensions (unaccent, pg_trgm) shared by every schema.
        server_settings={
            "search_path": f"{quote_ident(schema)}, public",
            "application_name": application,
            "standard_conforming_strings": "on",  # what `literal` relies on (PostgreSQL's default)
        },
        reset=keep_session,
        init=_pooled,
    )
    assert pool is not None
    return pool


async def keep_session(conn: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool, beyond asyncpg's own rollback of an
    unfinished transaction: nothing.

    asyncpg's default runs `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`,
    one more round trip per use of the pool. Pool connections keep no session state: every
    service statement runs alone or in a transaction, `SET` is only ever `SET LOCAL`, and what
    does LISTEN or hold a session advisory lock (the outbox relay) has a connection of its own.
    """
