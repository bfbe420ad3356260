"""catalog's availability projection: a batch's reports written with one statement, the newest of
each product counting, and an older report never overwriting a newer one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest_asyncio

from services.catalog.adapters.postgres import Projections
from services.platform.events.topology import Topology
from services.platform.local_servers import ServerUrls
from tests.integration.services.harness import service_tables

T0 = datetime(2026, 11, 1, 9, tzinfo=UTC)


@pytest_asyncio.fixture
async def pool(urls: ServerUrls, topology: Topology) -> AsyncIterator[asyncpg.Pool]:
    async with service_tables(urls, topology, "catalog") as pool:
        yield pool


async def available(pool: asyncpg.Pool) -> dict[str, int]:
    return {r["product_id"]: r["available"] for r in await pool.fetch("SELECT * FROM availability")}


async def test_the_newest_report_of_a_batch_counts_and_an_older_one_never_overwrites(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        projections = Projections(conn)
        await projections.set_available("p-old", 9, T0 + timedelta(minutes=5))
        await projections.set_available_many(
            [
                ("p-1", 5, T0 + timedelta(seconds=2)),
                ("p-1", 7, T0 + timedelta(seconds=1)),  # older, though later in the batch
                ("p-2", 3, T0),
                ("p-2", 2, T0),  # as new as the one before it: the later counts
                ("p-old", 1, T0),  # older than what is stored
            ]
        )
        assert await available(pool) == {"p-1": 5, "p-2": 2, "p-old": 9}
        await projections.set_available_many([])
    assert await available(pool) == {"p-1": 5, "p-2": 2, "p-old": 9}
