"""orders' copy of the products, with the products read last kept in memory: a kept product is
read without a statement, and the memory holds at most what it was given."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio

from services.orders.adapters.postgres import Products
from services.orders.domain import ProductInfo
from services.platform.events.topology import Topology
from services.platform.local_servers import ServerUrls
from tests.integration.services.harness import service_tables


@pytest_asyncio.fixture
async def pool(urls: ServerUrls, topology: Topology) -> AsyncIterator[asyncpg.Pool]:
    async with service_tables(urls, topology, "orders") as pool:
        yield pool


def product(n: int) -> ProductInfo:
    return ProductInfo(f"p-{n}", "art-1", f"Aceite {n}", 1000 + n, "EUR")


async def test_a_product_read_once_is_then_read_from_memory(pool: asyncpg.Pool) -> None:
    await Products(pool).add([product(1), product(2)])
    kept = Products(pool, remember=10)
    assert await kept.get_many(["p-1", "p-3"]) == {"p-1": product(1)}
    # Gone from the table (which never happens to a published product): still known from memory,
    # so the read made no statement.
    await pool.execute("DELETE FROM products")
    assert await kept.get_many(["p-1"]) == {"p-1": product(1)}
    # Never read, so not kept; an unknown product is not remembered as unknown either.
    assert await kept.get_many(["p-2", "p-3"]) == {}
    await Products(pool).add([product(3)])
    assert await kept.get_many(["p-3"]) == {"p-3": product(3)}
    assert await Products(pool).get_many(["p-1"]) == {}, "without `remember`, every read asks"


async def test_products_added_are_kept_and_the_least_recently_used_go_first(pool: asyncpg.Pool) -> None:
    kept = Products(pool, remember=2)
    await kept.add([product(1), product(2)])
    assert await kept.get_many(["p-1"]) == {"p-1": product(1)}  # p-1 is now the most recent
    await kept.add([product(3)])  # p-2 leaves memory
    await pool.execute("DELETE FROM products")
    assert await kept.get_many(["p-1", "p-2", "p-3"]) == {"p-1": product(1), "p-3": product(3)}
