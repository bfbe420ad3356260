"""The search index follows PostgreSQL's commits, and reloads after losing its connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from services.catalog.adapters.follower import IndexFollower
from services.catalog.adapters.index import ProductIndex
from services.catalog.adapters.postgres import Projections
from services.catalog.domain import SearchFilters
from services.platform.db import create_pool
from services.platform.events.topology import Topology
from services.platform.local_servers import ServerUrls
from services.platform.runtime import apply_schema
from tests.support.waiting import eventually

SCHEMA_SQL = Path("services/catalog/schema.sql").read_text()
NOW = datetime(2026, 5, 1, tzinfo=UTC)
BAEZA, JAEN = (37.9939, -3.4707), (37.7796, -3.7849)


@pytest_asyncio.fixture
async def pool(urls: ServerUrls, topology: Topology) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(urls.database_url, topology.schema("catalog"))
    await apply_schema(pool, topology.schema("catalog"), SCHEMA_SQL)
    yield pool
    await pool.close()


@contextlib.asynccontextmanager
async def following(
    urls: ServerUrls, topology: Topology, dsn: str = "", idle_check_s: float = 5.0
) -> AsyncIterator[IndexFollower]:
    follower = IndexFollower(
        dsn or urls.database_url, topology.schema("catalog"), ProductIndex(), idle_check_s=idle_check_s
    )
    task = asyncio.create_task(follower.follow())
    try:
        yield follower
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def publish(pool: asyncpg.Pool, product_id: str, name: str, artisan_id: str = "baeza") -> None:
    async with pool.acquire() as conn:
        await Projections(conn).upsert_product(product_id, artisan_id, name, "", "ceramica", 1000, "EUR", NOW)


def found(follower: IndexFollower, word: str, **filters: object) -> set[str]:
    page, _ = follower.index.search([word], False, SearchFilters(**filters), 0, 100)  # type: ignore[arg-type]
    return {r.product_id for r in page}


async def test_the_index_loads_then_follows_what_commits(
    pool: asyncpg.Pool, urls: ServerUrls, topology: Topology
) -> None:
    async with pool.acquire() as conn:
        await Projections(conn).upsert_artisan("baeza", "Alfarería", "Baeza", *BAEZA)
    await publish(pool, "before", "Cuenco de barro")
    async with following(urls, topology) as follower:
        await eventually(lambda: follower.index.ready, what="loaded")
        assert found(follower, "barro") == {"before"}

        async with pool.acquire() as conn:
            with contextlib.suppress(RuntimeError):
                async with conn.transaction():
                    await Projections(conn).upsert_product(
                        "rolled", "baeza", "Jarra de barro", "", "ceramica", 1, "EUR", NOW
                    )
                    raise RuntimeError("rolled back")
        await publish(pool, "after", "Plato de barro")
        # Notifications come in commit order: once "after" is in, a rolled-back write would be too.
        await eventually(lambda: "after" in found(follower, "barro"), what="the new product indexed")
        assert found(follower, "barro") == {"before", "after"}

        async with pool.acquire() as conn:
            await Projections(conn).set_available("after", 3, NOW)
        await eventually(
            lambda: found(follower, "barro", in_stock_only=True) == {"after"}, what="in stock indexed"
        )
        async with pool.acquire() as conn:
            await Projections(conn).set_available("after", 0, NOW)
        await eventually(lambda: not found(follower, "barro", in_stock_only=True), what="out of stock")

        assert found(follower, "barro", near=JAEN, radius_km=10) == set()
        async with pool.acquire() as conn:
            await Projections(conn).upsert_artisan("baeza", "Alfarería", "Jaén", *JAEN)
        await eventually(
            lambda: found(follower, "barro", near=JAEN, radius_km=10) == {"before", "after"},
            what="the workshop's move indexed",
        )
        assert follower.loads == 1


async def reloads_after(
    follower: IndexFollower, pool: asyncpg.Pool, fail: Callable[[], Awaitable[object]]
) -> None:
    """`fail` once the index is loaded; it answers again with all that was written meanwhile."""
    await eventually(lambda: follower.index.ready, what="loaded")
    await fail()
    await publish(pool, "meanwhile", "Botijo de barro")  # perhaps notified to nobody
    await eventually(lambda: follower.loads == 2 and follower.index.ready, what="loaded again")
    assert found(follower, "barro") == {"first", "meanwhile"}


async def test_a_lost_connection_reloads_everything_written_meanwhile(
    pool: asyncpg.Pool, urls: ServerUrls, topology: Topology, admin_db: asyncpg.Connection
) -> None:
    await publish(pool, "first", "Cuenco de barro")
    async with following(urls, topology) as follower:
        lost: list[int] = []

        async def kill_the_connection() -> None:
            lost.append(follower.backend_pid)
            assert await admin_db.fetchval("SELECT pg_terminate_backend($1)", follower.backend_pid)

        await reloads_after(follower, pool, kill_the_connection)
        assert follower.backend_pid != lost[0]


async def test_without_postgresql_it_never_answers_and_keeps_trying(
    pool: asyncpg.Pool, urls: ServerUrls, topology: Topology, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="services.catalog.adapters.follower")
    async with following(urls, topology, dsn="postgresql://postgres@127.0.0.1:9/a4co") as follower:
        await eventually(
            lambda: sum("cannot reach PostgreSQL" in r.getMessage() for r in caplog.records) >= 2,
            what="two attempts",
        )
        assert not follower.index.ready
        assert follower.loads == 0


async def test_a_failure_of_the_index_stops_answering_then_loads_again(
    pool: asyncpg.Pool, urls: ServerUrls, topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    await publish(pool, "first", "Cuenco de barro")
    async with following(urls, topology) as follower:
        update = follower.index.update
        failures: list[str] = []

        def refuse_once(*args: object) -> None:
            if not failures:
                failures.append("refused")
                raise ValueError("document refused")
            update(*args)  # type: ignore[arg-type]

        async def refuse_the_next_update() -> None:
            monkeypatch.setattr(follower.index, "update", refuse_once)

        await reloads_after(follower, pool, refuse_the_next_update)
        assert failures == ["refused"]


async def test_a_stop_ends_it_even_when_a_notification_wakes_it_at_that_moment(
    pool: asyncpg.Pool, urls: ServerUrls, topology: Topology
) -> None:
    await publish(pool, "first", "Cuenco de barro")
    follower = IndexFollower(urls.database_url, topology.schema("catalog"), ProductIndex())
    task = asyncio.create_task(follower.follow())
    try:
        await eventually(lambda: follower.index.ready, what="loaded")
        # A notification arrives in the same turn of the loop as the stop: the stop must win
        # (asyncio.wait_for of Python 3.11 returned the notification and lost the cancellation).
        follower._on_notify(None, 0, "", "p:first")
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        assert task in done, "the follower went on after being stopped"
        assert task.cancelled()
    finally:
        task.cancel()


async def test_once_quiet_the_index_lets_its_writer_go_until_the_next_change(
    pool: asyncpg.Pool, urls: ServerUrls, topology: Topology
) -> None:
    async with pool.acquire() as conn:
        await Projections(conn).upsert_artisan("baeza", "Alfarería", "Baeza", *BAEZA)
    async with following(urls, topology, idle_check_s=0.2) as follower:
        await eventually(lambda: follower.index.ready, what="loaded")
        await publish(pool, "first", "Cuenco de barro")
        await eventually(lambda: "first" in found(follower, "barro"), what="the product indexed")
        await eventually(lambda: not follower.index.writing, what="the writer let go once quiet")
        await publish(pool, "second", "Plato de barro")
        await eventually(
            lambda: found(follower, "barro") == {"first", "second"}, what="a new writer's update"
        )
