"""A connection to PostgreSQL over TCP finds out that its server has gone without a word (a
failover that moved its address, packets dropped): the pool's connections and those made alone
(the outbox relay's, the search index follower's) probe an idle server and give up on data not
acknowledged, as libpq's keepalives and tcp_user_timeout do."""

from __future__ import annotations

import socket
from typing import Any

import asyncpg
import pytest

from services.platform import db
from services.platform.local_servers import ServerUrls
from tests.support.stalling_proxy import postgres_port


def options(conn: Any) -> tuple[int, ...]:
    sock = conn._transport.get_extra_info("socket")
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
    )


DETECTING = (1, db.KEEPALIVE_IDLE_S, db.KEEPALIVE_INTERVAL_S, db.KEEPALIVE_PROBES, db.UNACKNOWLEDGED_MS)


async def test_connections_over_tcp_detect_a_vanished_server(urls: ServerUrls, prefix: str) -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{postgres_port(urls.database_url)}/a4co"
    plain = await asyncpg.connect(dsn)
    try:
        assert options(plain)[0] == 0, "not asyncpg's own doing"
    finally:
        await plain.close()

    alone = await db.connect(dsn)
    try:
        assert options(alone) == DETECTING
    finally:
        await alone.close()

    pool = await db.create_pool(dsn, f"{prefix}_peer", min_size=2, max_size=2)
    try:
        async with pool.acquire() as first, pool.acquire() as second:
            for conn in (first, second):
                assert options(conn) == DETECTING  # the proxy passes _transport on
    finally:
        await pool.close()


async def test_a_unix_socket_is_left_as_it_is(urls: ServerUrls) -> None:
    """make run's PostgreSQL is reached over a Unix socket, whose peer cannot vanish so."""
    if "host=/" not in urls.database_url:
        pytest.skip("the tests' PostgreSQL is reached over TCP (A4CO_DATABASE_URL)")
    conn = await db.connect(urls.database_url)
    try:
        sock = conn._transport.get_extra_info("socket")  # type: ignore[attr-defined]
        assert sock.family == socket.AF_UNIX
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
