"""The embedded servers are reached through their Unix sockets when the path allows one, and through
127.0.0.1 otherwise; nats-server runs Go's scheduler on one thread unless told otherwise."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import quote, urlsplit

import asyncpg
import pytest
from redis.asyncio import BlockingConnectionPool, Redis

from bench.harness import server_pids
from services.platform.local_servers import (
    UNIX_PATH_MAX,
    LocalServers,
    PostgresServer,
    RedisServer,
    ServerUrls,
    nats_environment,
)


def _embedded(local_servers: LocalServers, name: str) -> None:
    if not local_servers.is_managed(name):
        pytest.skip(f"{name} is an external server (A4CO_*_URL)")


async def test_postgres_is_reached_through_its_unix_socket(
    local_servers: LocalServers, urls: ServerUrls
) -> None:
    _embedded(local_servers, "postgres")
    assert urlsplit(urls.database_url).hostname is None
    conn = await asyncpg.connect(urls.database_url)
    try:
        # A connection over a Unix socket has no server address.
        assert await conn.fetchval("SELECT inet_server_addr()") is None
        assert await conn.fetchval("SELECT current_database()") == "a4co"
    finally:
        await conn.close()


async def test_redis_is_reached_through_its_unix_socket(
    local_servers: LocalServers, urls: ServerUrls
) -> None:
    _embedded(local_servers, "redis")
    assert urls.redis_url.startswith("unix://")
    client = Redis(connection_pool=BlockingConnectionPool.from_url(urls.redis_url))
    try:
        info = await client.client_info()
        assert str(info["addr"]).startswith(str(local_servers.redis.socket_path))
        assert info["flags"] == "U"  # a Unix socket client
    finally:
        await client.aclose()


def test_the_benchmark_finds_the_servers_behind_socket_urls(
    local_servers: LocalServers, urls: ServerUrls
) -> None:
    _embedded(local_servers, "postgres")
    _embedded(local_servers, "redis")
    found = server_pids(urls)
    assert set(found) == {"PostgreSQL", "NATS", "Redis"}
    commands = {name: Path(f"/proc/{pid}/cmdline").read_bytes() for name, pid in found.items()}
    assert b"postgres" in commands["PostgreSQL"]
    assert b"redis-server" in commands["Redis"]


def test_a_data_directory_too_deep_for_a_socket_falls_back_to_tcp(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * (UNIX_PATH_MAX - len(str(tmp_path))))
    postgres, redis = PostgresServer(deep, durable=False), RedisServer(deep, durable=False)
    assert postgres.url == f"postgresql://postgres@127.0.0.1:{postgres.port}/a4co"
    assert redis.url == f"redis://127.0.0.1:{redis.port}/0"
    assert "--unixsocket" not in redis.command()


def test_a_socket_path_is_found_however_its_url_quotes_it(tmp_path: Path) -> None:
    path = tmp_path / "with space" / "redis.sock"
    path.parent.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen()
        urls = ServerUrls(
            nats_url="nats://a4co.invalid:4222",
            database_url="postgresql://postgres@a4co.invalid/a4co",
            redis_url=f"unix://{quote(str(path), safe='/')}?db=0",
        )
        assert server_pids(urls) == {"Redis": os.getpid()}


def test_the_embedded_nats_server_runs_on_one_go_thread_unless_told_otherwise(
    local_servers: LocalServers,
) -> None:
    _embedded(local_servers, "nats")
    assert local_servers.nats.pid is not None
    environ = Path(f"/proc/{local_servers.nats.pid}/environ").read_bytes().split(b"\0")
    expected = nats_environment(os.environ)["GOMAXPROCS"]
    assert f"GOMAXPROCS={expected}".encode() in environ
    assert nats_environment({"PATH": "/bin"}) == {"PATH": "/bin", "GOMAXPROCS": "1"}
    assert nats_environment({"GOMAXPROCS": ""})["GOMAXPROCS"] == "1"
    assert nats_environment({"GOMAXPROCS": "4"})["GOMAXPROCS"] == "4"
