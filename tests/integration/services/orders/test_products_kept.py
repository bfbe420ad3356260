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
from tests.support.waiting import eventually


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


async def test_a_kept_product_is_read_again_once_too_old_or_forgotten(pool: asyncpg.Pool) -> None:
    # Long enough that the first read below is surely within it, on a slow machine too.
    kept = Products(pool, remember=10, kept_s=1.0)
    await kept.add([product(1), product(2)])
    cheaper = ProductInfo("p-1", "art-1", "Aceite 1", 900, "EUR")
    await Products(pool).change(cheaper, revision=2)  # recorded by another replica
    assert await kept.get_many(["p-1"]) == {"p-1": product(1)}, "still kept"

    async def read_again() -> bool:
        return await kept.get_many(["p-1"]) == {"p-1": cheaper}

    await eventually(read_again, timeout=5, what="the change read once the kept copy is too old")
    gone = ProductInfo("p-2", "art-1", "Aceite 2", 1002, "EUR", withdrawn=True)
    await Products(pool).change(gone, revision=2)
    kept.forget("p-2")  # recorded by this replica
    assert await kept.get_many(["p-2"]) == {"p-2": gone}


async def test_the_newest_revision_of_a_product_wins_whatever_order_its_events_come_in(
    pool: asyncpg.Pool,
) -> None:
    products = Products(pool)
    withdrawn = ProductInfo("p-1", "art-1", "Aceite nuevo", 800, "EUR", withdrawn=True)
    changed = ProductInfo("p-1", "art-1", "Aceite nuevo", 800, "EUR")
    await products.change(withdrawn, revision=3)
    await products.change(changed, revision=2)
    await products.change(product(1), revision=1)  # its publication, last
    await products.add([product(1)])  # catalog's answer
    assert await products.get_many(["p-1"]) == {"p-1": withdrawn}
    # What catalog answered for a product (revision 0) is replaced by its publication.
    await products.add([product(2)])
    await products.change(ProductInfo("p-2", "art-1", "Aceite 2", 1500, "EUR"), revision=1)
    assert (await products.get_many(["p-2"]))["p-2"].price_cents == 1500
