"""inventory's reservations repository: what the reservation step reads and writes at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from services.inventory.adapters.postgres import Reservations
from services.platform.db import create_pool
from services.platform.events.topology import Topology
from services.platform.local_servers import ServerUrls
from services.platform.runtime import apply_schema

SCHEMA = Path("services/inventory/schema.sql")


@pytest_asyncio.fixture
async def pool(urls: ServerUrls, topology: Topology) -> AsyncIterator[asyncpg.Pool]:
    schema = topology.schema("inventory")
    pool = await create_pool(urls.database_url, schema)
    await apply_schema(pool, schema, SCHEMA.read_text())
    await pool.execute(
        "INSERT INTO stock (product_id, artisan_id, on_hand) VALUES ('p-1', 'a', 10), ('p-2', 'a', 5)"
    )
    await pool.execute(
        "INSERT INTO reservations (order_id, product_id, quantity, status) VALUES"
        " ('o-1', 'p-1', 1, 'held'), ('o-1', 'p-2', 1, 'held'), ('o-3', 'p-1', 2, 'released')"
    )
    yield pool
    await pool.close()


@pytest.mark.parametrize(
    ("orders", "products", "seen", "levels"),
    [
        (["o-1", "o-2", "o-3"], ["p-1", "p-2", "p-x"], {"o-1", "o-3"}, ["p-1", "p-2"]),
        (["o-1"], ["p-x"], {"o-1"}, []),  # no product known: the orders are still found
        (["o-2"], ["p-2"], set(), ["p-2"]),
        ([], [], set(), []),
    ],
)
async def test_one_statement_finds_the_orders_reserved_before_and_locks_the_levels(
    pool: asyncpg.Pool, orders: list[str], products: list[str], seen: set[str], levels: list[str]
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        found, locked = await Reservations(conn).existing_and_locked(orders, products)
        assert found == seen
        assert sorted(locked) == levels
        for product_id in levels:  # held until the transaction ends
            with pytest.raises(asyncpg.LockNotAvailableError):
                await pool.execute("SELECT 1 FROM stock WHERE product_id = $1 FOR UPDATE NOWAIT", product_id)
    if levels:
        assert locked[levels[0]].on_hand == {"p-1": 10, "p-2": 5}[levels[0]]


async def test_holding_writes_the_lines_and_moves_the_levels_in_one_statement(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        levels = await Reservations(conn).hold_many(
            [("o-9", "p-1", 2), ("o-9", "p-2", 1), ("o-8", "p-1", 1)], {"p-1": (3, 2), "p-2": (1, 1)}
        )
    assert sorted((lv.product_id, lv.reserved, lv.version) for lv in levels) == [("p-1", 3, 3), ("p-2", 1, 2)]
    rows = await pool.fetch(
        "SELECT order_id, product_id, quantity FROM reservations WHERE status = 'held' ORDER BY 1, 2"
    )
    assert [tuple(r) for r in rows] == [
        ("o-1", "p-1", 1),
        ("o-1", "p-2", 1),
        ("o-8", "p-1", 1),
        ("o-9", "p-1", 2),
        ("o-9", "p-2", 1),
    ]
