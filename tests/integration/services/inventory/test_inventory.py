"""inventory over gRPC: stock from published products, cached checks, artisans' adjustments."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from a4co.artisans.events.v1 import artisan_events_pb2
from a4co.inventory.v1 import inventory_service_pb2 as pb
from a4co.inventory.v1 import inventory_service_pb2_grpc as pb_grpc
from services.inventory.__main__ import build
from services.inventory.adapters.cache import StockCache
from services.inventory.domain import MAX_ON_HAND, StockLevel
from services.platform.auth import Role
from services.platform.grpc.status import details_of
from services.platform.local_servers import ServerUrls
from tests.integration.services.harness import (
    Keys,
    RunningService,
    publish_event,
    running_service,
    settings_for,
    stream_events,
    token,
)
from tests.support.rpc import failure
from tests.support.waiting import eventually

SCHEMA = Path("services/inventory/schema.sql")
ARTISAN, OTHER = "artisan-ubeda", "artisan-baeza"


@pytest_asyncio.fixture
async def inventory(urls: ServerUrls, prefix: str, keys: Keys) -> AsyncIterator[RunningService]:
    async with running_service(
        "inventory", build, SCHEMA, settings_for("inventory", urls, prefix, keys)
    ) as svc:
        yield svc


@pytest.fixture
def stub(inventory: RunningService) -> pb_grpc.InventoryServiceAsyncStub:
    return pb_grpc.InventoryServiceStub(inventory.channel)


async def publish_product(inventory: RunningService, product_id: str, stock: int, threshold: int = 0) -> None:
    await publish_event(
        inventory,
        artisan_events_pb2.ProductPublished(
            product_id=product_id,
            artisan_id=ARTISAN,
            name="Plato de cerámica de Úbeda",
            initial_stock=stock,
            low_stock_threshold=threshold,
        ),
        product_id,
        source="artisans",
    )

    async def known() -> bool:
        count = await inventory.infra.pool.fetchval(
            "SELECT count(*) FROM stock WHERE product_id = $1", product_id
        )
        return bool(count == 1)

    await eventually(known, what=f"stock row for {product_id}")


def adjust(product_id: str, delta: int, request_id: str | None = None, **extra: int) -> pb.AdjustStockRequest:
    return pb.AdjustStockRequest(
        request_id=request_id or str(uuid.uuid4()),
        product_id=product_id,
        delta=delta,
        reason="restock",
        **extra,
    )


async def test_a_published_product_gets_stock_and_checks_answer_per_line(
    stub: pb_grpc.InventoryServiceAsyncStub, inventory: RunningService
) -> None:
    await publish_product(inventory, "p-plato", 5)
    answer = await stub.CheckStock(
        pb.CheckStockRequest(
            lines=[
                pb.StockRequestLine(product_id="p-plato", quantity=3),
                pb.StockRequestLine(product_id="p-nada", quantity=1),
            ]
        )
    )
    assert [(x.product_id, x.requested, x.available, x.ok, x.known) for x in answer.lines] == [
        ("p-plato", 3, 5, True, True),
        ("p-nada", 1, 0, False, False),
    ]
    assert answer.all_available is False
    stock = (await stub.GetStock(pb.GetStockRequest(product_id="p-plato"))).stock
    assert (stock.on_hand, stock.reserved, stock.available, stock.artisan_id) == (5, 0, 5, ARTISAN)

    async def initial_event() -> bool:
        return any(e.definition.name == "StockAdjusted" for e in await stream_events(inventory, "INVENTORY"))

    await eventually(initial_event, what="StockAdjusted(initial) published")


async def test_checks_are_answered_from_the_cache_kept_fresh_by_changes(
    stub: pb_grpc.InventoryServiceAsyncStub, inventory: RunningService, keys: Keys
) -> None:
    await publish_product(inventory, "p-aceite", 10)
    check = pb.CheckStockRequest(lines=[pb.StockRequestLine(product_id="p-aceite", quantity=12)])
    assert (await stub.CheckStock(check)).lines[0].available == 10
    cache = StockCache(inventory.infra.redis, inventory.infra.settings.prefix)
    assert await cache.available(["p-aceite"]) == {"p-aceite": 10}

    # The database changes behind the cache's back: the cache, not the database, answers.
    await inventory.infra.pool.execute("UPDATE stock SET on_hand = 99 WHERE product_id = 'p-aceite'")
    assert (await stub.CheckStock(check)).lines[0].available == 10

    # inventory's own change refreshes the cache at once.
    await stub.AdjustStock(adjust("p-aceite", 5), metadata=token(keys, ARTISAN, Role.ARTISAN))
    line = (await stub.CheckStock(check)).lines[0]
    assert (line.available, line.ok) == (104, True)


async def test_an_older_cache_write_never_overwrites_a_newer_one(inventory: RunningService) -> None:
    cache = StockCache(inventory.infra.redis, inventory.infra.settings.prefix)
    newer = StockLevel("p-x", ARTISAN, on_hand=7, reserved=0, low_stock_threshold=0, version=5)
    older = StockLevel("p-x", ARTISAN, on_hand=3, reserved=0, low_stock_threshold=0, version=4)
    assert await cache.put(newer)
    assert not await cache.put(older)
    assert await cache.available(["p-x"]) == {"p-x": 7}


async def test_only_the_owner_adjusts_and_a_retry_applies_once(
    stub: pb_grpc.InventoryServiceAsyncStub, inventory: RunningService, keys: Keys
) -> None:
    await publish_product(inventory, "p-esparto", 4, threshold=3)
    request_id = str(uuid.uuid4())
    owner = token(keys, ARTISAN, Role.ARTISAN)
    first = await stub.AdjustStock(adjust("p-esparto", -2, request_id), metadata=owner)
    again = await stub.AdjustStock(adjust("p-esparto", -2, request_id), metadata=owner)
    assert first.stock.on_hand == again.stock.on_hand == 2

    other = await failure(stub.AdjustStock(adjust("p-esparto", 1), metadata=token(keys, OTHER, Role.ARTISAN)))
    assert other.code() == grpc.StatusCode.PERMISSION_DENIED
    assert details_of(other)[0].reason == "NOT_PRODUCT_OWNER"  # type: ignore[union-attr]
    customer = await failure(
        stub.AdjustStock(adjust("p-esparto", 1), metadata=token(keys, "c-1", Role.CUSTOMER))
    )
    assert customer.code() == grpc.StatusCode.PERMISSION_DENIED
    anonymous = await failure(stub.AdjustStock(adjust("p-esparto", 1)))
    assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED
    admin = await stub.AdjustStock(adjust("p-esparto", 1), metadata=token(keys, "root", Role.ADMIN))
    assert admin.stock.on_hand == 3
    assert await inventory.infra.pool.fetchval("SELECT count(*) FROM adjustments") == 2

    async def published() -> list[str]:
        return [e.definition.name for e in await stream_events(inventory, "INVENTORY")]

    await eventually(lambda: _count(published(), "StockAdjusted", 3), what="three StockAdjusted")
    assert (await published()).count("LowStockWarning") == 1, "one warning when 4 -> 2 crossed 3"


async def _count(names: object, name: str, expected: int) -> bool:
    return list(await names).count(name) == expected  # type: ignore[misc]


async def test_bad_requests_name_the_fields_and_change_nothing(
    stub: pb_grpc.InventoryServiceAsyncStub, inventory: RunningService, keys: Keys
) -> None:
    await publish_product(inventory, "p-queso", 2)
    error = await failure(
        stub.AdjustStock(
            pb.AdjustStockRequest(request_id="nope", product_id="", delta=0, low_stock_threshold=-1),
            metadata=token(keys, ARTISAN, Role.ARTISAN),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in details_of(error)[1]} == {
        "request_id",
        "product_id",
        "delta",
        "low_stock_threshold",
    }

    error = await failure(
        stub.CheckStock(
            pb.CheckStockRequest(
                lines=[
                    pb.StockRequestLine(product_id="a", quantity=0),
                    pb.StockRequestLine(product_id="a", quantity=1),
                ]
            )
        )
    )
    assert {f for f, _ in details_of(error)[1]} == {"lines[0].quantity", "lines[1].product_id"}
    assert (await failure(stub.CheckStock(pb.CheckStockRequest()))).code() == grpc.StatusCode.INVALID_ARGUMENT

    too_low = await failure(
        stub.AdjustStock(adjust("p-queso", -3), metadata=token(keys, ARTISAN, Role.ARTISAN))
    )
    assert too_low.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await inventory.infra.pool.fetchval("SELECT on_hand FROM stock WHERE product_id = 'p-queso'") == 2
    missing = await failure(stub.GetStock(pb.GetStockRequest(product_id="p-none")))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_one_request_id_on_two_products_at_once_is_applied_once_and_refused_once(
    stub: pb_grpc.InventoryServiceAsyncStub, inventory: RunningService, keys: Keys
) -> None:
    await publish_product(inventory, "p-uno", 5)
    await publish_product(inventory, "p-dos", 5)
    owner, request_id = token(keys, ARTISAN, Role.ARTISAN), str(uuid.uuid4())
    outcomes = await asyncio.gather(
        *(stub.AdjustStock(adjust(p, 1, request_id), metadata=owner) for p in ("p-uno", "p-dos")),
        return_exceptions=True,
    )
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(refused) == 1, outcomes  # the other was applied
    assert refused[0].code() == grpc.StatusCode.PERMISSION_DENIED  # never INTERNAL, whichever came first
    assert details_of(refused[0])[0].reason == "REQUEST_ID_REUSED"  # type: ignore[union-attr]
    levels = await inventory.infra.pool.fetch(
        "SELECT on_hand FROM stock WHERE product_id IN ('p-uno', 'p-dos')"
    )
    assert sorted(r["on_hand"] for r in levels) == [5, 6]


async def test_stock_is_kept_within_what_postgresql_holds(
    stub: pb_grpc.InventoryServiceAsyncStub, inventory: RunningService, keys: Keys
) -> None:
    # Once, a stock taken past PostgreSQL's integer failed the call with INTERNAL.
    await publish_product(inventory, "p-granel", MAX_ON_HAND - 1_000_000)
    owner = token(keys, ARTISAN, Role.ARTISAN)
    full = await stub.AdjustStock(adjust("p-granel", 1_000_000), metadata=owner)
    assert full.stock.on_hand == MAX_ON_HAND
    over = await failure(stub.AdjustStock(adjust("p-granel", 1), metadata=owner))
    assert over.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = details_of(over)
    assert info is not None
    assert info.reason == "STOCK_ABOVE_LIMIT"
    assert info.metadata["limit"] == str(MAX_ON_HAND)
    on_hand = await inventory.infra.pool.fetchval("SELECT on_hand FROM stock WHERE product_id = 'p-granel'")
    assert on_hand == MAX_ON_HAND
