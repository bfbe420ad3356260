"""A connection to PostgreSQL or Redis over TCP finds out that its server has gone without a word (a
failover that moved its address, packets dropped): PostgreSQL's pool connections and those made
alone (the outbox relay's, the search index follower's), and Redis's command and pub/sub
connections, probe an idle server and give up on data not acknowledged, as libpq's keepalives and
tcp_user_timeout do (decisions 74 and 76)."""

from __future__ import annotations

import socket
from typing import Any

import asyncpg
import pytest
from redis.asyncio import ConnectionPool, Redis

from services.platform import db, keepalive
from services.platform.local_servers import LocalServers, ServerUrls
from services.platform.runtime import redis_pool
from tests.support.stalling_proxy import postgres_port


def options(conn: Any) -> tuple[int, ...]:
    """An asyncpg connection's socket options (the pool's proxy passes `_transport` on)."""
    return socket_options(conn._transport.get_extra_info("socket"))


def socket_options(sock: socket.socket) -> tuple[int, ...]:
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
    )


DETECTING = (
    1,
    keepalive.KEEPALIVE_IDLE_S,
    keepalive.KEEPALIVE_INTERVAL_S,
    keepalive.KEEPALIVE_PROBES,
    keepalive.UNACKNOWLEDGED_MS,
)


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


def redis_over_tcp(local_servers: LocalServers, urls: ServerUrls) -> str:
    """The tests' Redis over TCP (the session's server is reached over a Unix socket when one fits)."""
    if local_servers.is_managed("redis"):
        return f"redis://127.0.0.1:{local_servers.redis.port}/0"
    if urls.redis_url.startswith("unix:"):
        pytest.skip("the tests' Redis is external and reached over a Unix socket (A4CO_REDIS_URL)")
    return urls.redis_url


async def redis_sockets(pool: ConnectionPool) -> list[socket.socket]:
    """The sockets of a pub/sub listener's connection and of a command's, both connected."""
    client = Redis(connection_pool=pool)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe("dead-peer-detection")
        assert await client.ping()
        command = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            assert pubsub.connection is not None
            assert pubsub.connection is not command
            return [conn._writer.transport.get_extra_info("socket") for conn in (pubsub.connection, command)]
        finally:
            await pool.release(command)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()


async def test_redis_connections_over_tcp_detect_a_vanished_server(
    local_servers: LocalServers, urls: ServerUrls
) -> None:
    """A pub/sub listener reads without a timeout. redis-py's own keepalive (30 s idle, then 3
    probes 5 s apart) probes only while nothing it sent is unacknowledged: a SUBSCRIBE sent to a
    server that has gone leaves the listener to the kernel's retransmissions, some 15 minutes
    (decision 76)."""
    url = redis_over_tcp(local_servers, urls)
    plain = ConnectionPool.from_url(url)
    try:
        for sock in await redis_sockets(plain):
            assert socket_options(sock)[1:] == (30, 5, 3, 0), "redis-py's own, with no TCP_USER_TIMEOUT"
    finally:
        await plain.aclose()

    ours = redis_pool(url)
    try:
        for sock in await redis_sockets(ours):
            assert socket_options(sock) == DETECTING
    finally:
        await ours.aclose()


async def test_redis_over_a_unix_socket_takes_no_tcp_option(
    local_servers: LocalServers, urls: ServerUrls
) -> None:
    """make run's Redis is reached over a Unix socket, whose connections redis-py makes without
    the keepalive options (and would refuse them)."""
    if not urls.redis_url.startswith("unix:"):
        pytest.skip("the tests' Redis is reached over TCP")
    pool = redis_pool(urls.redis_url)
    try:
        for sock in await redis_sockets(pool):
            assert sock.family == socket.AF_UNIX
    finally:
        await pool.aclose()
