"""artisans over gRPC: onboarding and publishing, and their events reaching inventory, catalog and geo."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest_asyncio

from a4co.artisans.v1 import artisans_service_pb2 as pb
from a4co.artisans.v1 import artisans_service_pb2_grpc as pb_grpc
from a4co.catalog.v1 import catalog_service_pb2 as catalog_pb
from a4co.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from a4co.geo.v1 import geo_service_pb2 as geo_pb
from a4co.geo.v1 import geo_service_pb2_grpc as geo_grpc
from a4co.inventory.v1 import inventory_service_pb2 as inventory_pb
from a4co.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from a4co.type.v1 import lat_lng_pb2, money_pb2
from services.artisans.__main__ import build
from services.platform.auth import Role
from services.platform.grpc.status import details_of
from services.platform.local_servers import ServerUrls
from tests.integration.services.conftest import BUILDS
from tests.integration.services.harness import (
    Keys,
    RunningService,
    running_service,
    settings_for,
    stream_events,
    token,
)
from tests.support.rpc import failure
from tests.support.waiting import eventually

UBEDA = lat_lng_pb2.LatLng(latitude=38.0133, longitude=-3.3706)


@pytest_asyncio.fixture
async def marketplace(urls: ServerUrls, prefix: str, keys: Keys) -> AsyncIterator[dict[str, RunningService]]:
    builds = {"artisans": build, **{k: BUILDS[k] for k in ("inventory", "catalog", "geo")}}
    async with contextlib.AsyncExitStack() as stack:
        running = {}
        for name, b in builds.items():
            schema = Path(f"services/{name}/schema.sql")
            running[name] = await stack.enter_async_context(
                running_service(name, b, schema, settings_for(name, urls, prefix, keys))
            )
        yield running


def onboarding(request_id: str | None = None, **overrides: object) -> pb.OnboardArtisanRequest:
    fields: dict[str, object] = {
        "request_id": request_id or str(uuid.uuid4()),
        "display_name": "Alfarería Tito",
        "craft": "ceramica",
        "locality": "Úbeda",
        "location": UBEDA,
        "bio": "Cerámica verde de Úbeda.",
    }
    fields.update(overrides)
    return pb.OnboardArtisanRequest(**fields)  # type: ignore[arg-type]


def publishing(request_id: str | None = None) -> pb.PublishProductRequest:
    return pb.PublishProductRequest(
        request_id=request_id or str(uuid.uuid4()),
        name="Fuente de cerámica verde",
        description="Fuente honda vidriada en verde, hecha a torno.",
        category="ceramica",
        price=money_pb2.Money(currency_code="EUR", amount_cents=3400),
        initial_stock=7,
        low_stock_threshold=2,
    )


async def test_an_artisan_onboards_once_and_publishes_and_everyone_hears(
    marketplace: dict[str, RunningService], keys: Keys
) -> None:
    stub = pb_grpc.ArtisansServiceStub(marketplace["artisans"].channel)
    me = token(keys, "artisan-tito", Role.ARTISAN)
    request_id = str(uuid.uuid4())
    # Two tries of one call at once, then a retry: one workshop, the same answer each time.
    first, racing = await asyncio.gather(
        *(stub.OnboardArtisan(onboarding(request_id), metadata=me) for _ in range(2))
    )
    again = await stub.OnboardArtisan(onboarding(request_id), metadata=me)
    assert first.artisan == racing.artisan == again.artisan, "a retried call returns the same workshop"
    other = await failure(stub.OnboardArtisan(onboarding(), metadata=me))
    assert other.code() == grpc.StatusCode.ALREADY_EXISTS

    product_request = str(uuid.uuid4())
    # Two calls with one request id at once (a client's retry racing its first try): one product.
    both = await asyncio.gather(
        *(stub.PublishProduct(publishing(product_request), metadata=me) for _ in range(2))
    )
    published = both[0].product
    assert both[1].product == published
    assert (await stub.PublishProduct(publishing(product_request), metadata=me)).product == published

    # Another artisan's call with those request ids is refused, not failed (it was INTERNAL).
    someone = token(keys, "artisan-otro", Role.ARTISAN)
    reused = await failure(stub.OnboardArtisan(onboarding(request_id), metadata=someone))
    assert (reused.code(), details_of(reused)[0].reason) == (  # type: ignore[union-attr]
        grpc.StatusCode.PERMISSION_DENIED,
        "REQUEST_ID_REUSED",
    )
    await stub.OnboardArtisan(onboarding(), metadata=someone)
    reused = await failure(stub.PublishProduct(publishing(product_request), metadata=someone))
    assert (reused.code(), details_of(reused)[0].reason) == (  # type: ignore[union-attr]
        grpc.StatusCode.PERMISSION_DENIED,
        "REQUEST_ID_REUSED",
    )

    await eventually(
        lambda: _names(marketplace["artisans"], ["ArtisanOnboarded", "ProductPublished", "ArtisanOnboarded"]),
        what="one ArtisanOnboarded each and one ProductPublished, however often the calls were retried",
    )

    inventory = inventory_grpc.InventoryServiceStub(marketplace["inventory"].channel)
    catalog = catalog_grpc.CatalogServiceStub(marketplace["catalog"].channel)
    geo = geo_grpc.GeoServiceStub(marketplace["geo"].channel)

    async def everywhere() -> bool:
        try:
            stock = (
                await inventory.GetStock(inventory_pb.GetStockRequest(product_id=published.product_id))
            ).stock
            product = (
                await catalog.GetProduct(catalog_pb.GetProductRequest(product_id=published.product_id))
            ).product
        except grpc.aio.AioRpcError:
            return False
        nearby = await geo.FindNearbyArtisans(geo_pb.FindNearbyArtisansRequest(location=UBEDA, radius_km=5))
        return (
            stock.on_hand == 7
            and product.available_quantity == 7
            and product.locality == "Úbeda"
            and {(a.artisan_id, a.product_count) for a in nearby.artisans}
            == {("artisan-tito", 1), ("artisan-otro", 0)}
        )

    await eventually(everywhere, timeout=20, what="stock, catalogue and map updated from the events")


async def _names(svc: RunningService, expected: list[str]) -> bool:
    return [e.definition.name for e in await stream_events(svc, "ARTISANS")] == expected


async def test_refusals(marketplace: dict[str, RunningService], keys: Keys) -> None:
    stub = pb_grpc.ArtisansServiceStub(marketplace["artisans"].channel)
    me = token(keys, "artisan-nuevo", Role.ARTISAN)
    not_yet = await failure(stub.PublishProduct(publishing(), metadata=me))
    assert not_yet.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details_of(not_yet)[0].reason == "NOT_ONBOARDED"  # type: ignore[union-attr]

    madrid = await failure(
        stub.OnboardArtisan(
            onboarding(craft="plastico", location=lat_lng_pb2.LatLng(latitude=40.4, longitude=-3.7)),
            metadata=me,
        )
    )
    assert {f for f, _ in details_of(madrid)[1]} == {"craft", "location"}
    # A price or stock past these would, once ordered or adjusted, overflow what PostgreSQL holds.
    huge = publishing()
    huge.price.amount_cents, huge.initial_stock, huge.low_stock_threshold = 2**62, 2**31 - 1, 2**31 - 1
    too_much = await failure(stub.PublishProduct(huge, metadata=me))
    assert {f for f, _ in details_of(too_much)[1]} == {
        "price.amount_cents",
        "initial_stock",
        "low_stock_threshold",
    }
    customer = await failure(stub.OnboardArtisan(onboarding(), metadata=token(keys, "c-1", Role.CUSTOMER)))
    assert customer.code() == grpc.StatusCode.PERMISSION_DENIED
    pool = marketplace["artisans"].infra.pool
    assert await pool.fetchval("SELECT count(*) FROM workshops") == 0
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
