"""catalog over gRPC: search quality on the demo catalogue, filters, pages, projections."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from a4co.artisans.events.v1 import artisan_events_pb2
from a4co.catalog.v1 import catalog_service_pb2 as pb
from a4co.catalog.v1 import catalog_service_pb2_grpc as pb_grpc
from a4co.inventory.events.v1 import inventory_events_pb2
from a4co.type.v1 import lat_lng_pb2, money_pb2
from services.catalog.__main__ import build
from services.catalog.adapters import index as index_module
from services.catalog.adapters.index import ProductIndex, distance_km
from services.catalog.adapters.postgres import Projections
from services.catalog.domain import encode_page_token, fold
from services.catalog.grpc_api import filters_of
from services.demo.catalogue import ARTISANS, products
from services.platform.grpc.status import details_of
from services.platform.local_servers import ServerUrls
from tests.integration.services.harness import (
    Keys,
    RunningService,
    publish_event,
    running_service,
    settings_for,
)
from tests.support.metrics import coalesced
from tests.support.waiting import eventually

SCHEMA = Path("services/catalog/schema.sql")
CAZORLA = lat_lng_pb2.LatLng(latitude=37.9148, longitude=-3.0030)
PRODUCTS = products()


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=["index", "sql"])
async def catalog(
    request: pytest.FixtureRequest, urls: ServerUrls, keys: Keys
) -> AsyncIterator[RunningService]:
    """One catalog with the whole demo catalogue, shared by this module's read-mostly tests; each
    test runs against the search index, then with the index off (every search in SQL)."""
    prefix = "t" + uuid.uuid4().hex[:12]
    index = ProductIndex()
    wired = functools.partial(build, index=index, follow=request.param == "index")
    async with running_service("catalog", wired, SCHEMA, settings_for("catalog", urls, prefix, keys)) as svc:
        start = datetime(2026, 1, 1, tzinfo=UTC)
        async with svc.infra.pool.acquire() as conn, conn.transaction():
            projections = Projections(conn)
            for a in ARTISANS:
                await projections.upsert_artisan(a.key, a.name, a.town, a.latitude, a.longitude)
            for i, p in enumerate(PRODUCTS):
                when = start + timedelta(minutes=i)
                await projections.upsert_product(
                    p.key, p.artisan_key, p.name, p.description, p.category, p.price_cents, "EUR", when
                )
                await projections.set_available(p.key, p.stock, when)
        if request.param == "index":
            await eventually(
                lambda: index.ready and index.documents == len(PRODUCTS), what="the search index loaded"
            )
        yield svc


@pytest.fixture
def stub(catalog: RunningService) -> pb_grpc.CatalogServiceAsyncStub:
    return pb_grpc.CatalogServiceStub(catalog.channel)


async def names(stub: pb_grpc.CatalogServiceAsyncStub, query: str, **filters: object) -> list[str]:
    response = await stub.SearchProducts(pb.SearchProductsRequest(query=query, page_size=10, **filters))  # type: ignore[arg-type]
    return [r.product.name for r in response.results]


@pytest.mark.parametrize(
    ("query", "first_has"),
    [
        ("aceite olivia virjen", "aceite oliva virgen"),  # typos
        ("aceite olivia virjen extra", "aceite oliva virgen extra"),
        ("aceites de oliva virgen", "aceite oliva virgen"),  # plurals
        ("ceramica verde ubeda", "plato ceramica verde ubeda"),  # no accents
        ("CERÁMICA VERDE", "ceramica verde"),  # accents and capitals
        ("cestas de esparto", "cesta esparto"),
        ("quesos de cabra", "queso cabra"),
        ("miel de romero", "miel romero"),
        ("botijo", "botijo"),
        ("jarapa", "jarapa"),
        ("mantecados almendra", "mantecados almendra"),
        ("farol forjado", "farol forjado"),
    ],
)
async def test_search_forgives_typos_accents_and_plurals(
    stub: pb_grpc.CatalogServiceAsyncStub, query: str, first_has: str
) -> None:
    found = await names(stub, query)
    assert found, f"{query!r} found nothing"
    first = fold(found[0])
    assert all(word in first for word in first_has.split()), f"{query!r} -> {found[:3]}"


async def test_the_name_outranks_a_mention_in_the_description(stub: pb_grpc.CatalogServiceAsyncStub) -> None:
    found = await names(stub, "miel")
    # "Pestiños con miel" mentions honey in its name too, but honey products come first; the candle,
    # which mentions nothing of honey, never appears.
    assert found[0].startswith("Miel")
    assert not any(n.startswith("Vela") for n in found)


def engines() -> dict[str, float]:
    """How many searches each engine has answered in this process."""
    return {e: REGISTRY.get_sample_value("a4co_searches_total", {"engine": e}) or 0 for e in ("index", "sql")}


async def test_every_search_uses_the_index_while_it_follows(
    stub: pb_grpc.CatalogServiceAsyncStub, request: pytest.FixtureRequest
) -> None:
    before = engines()
    await names(stub, "aceite")
    await stub.SearchProducts(pb.SearchProductsRequest(category="forja"))  # no words
    await stub.SearchProducts(pb.SearchProductsRequest(near=CAZORLA, radius_km=40))  # nor here
    await stub.SearchProducts(pb.SearchProductsRequest(query="queso", near=CAZORLA, radius_km=40))
    after = engines()
    moved = {e: after[e] - before[e] for e in after}
    indexed = request.node.callspec.params["catalog"] == "index"
    assert moved == ({"index": 4, "sql": 0} if indexed else {"index": 0, "sql": 4})


async def test_searches_at_once_each_get_their_own_page(
    stub: pb_grpc.CatalogServiceAsyncStub, request: pytest.FixtureRequest
) -> None:
    """The pages of searches in flight together are read together (services/platform/coalesce.py),
    and each search still answers what it answers alone."""
    queries = ["aceite", "miel", "queso", "botijo", "jarapa", "esparto", "ceramica", "farol"]
    alone = {q: await names(stub, q) for q in queries}

    before = coalesced("catalog_products")
    together = await asyncio.gather(*(names(stub, q) for q in queries * 3))
    assert together == [alone[q] for q in queries * 3]
    assert all(alone.values())
    indexed = request.node.callspec.params["catalog"] == "index"
    pages = sum(1 for found in together if found)
    assert coalesced("catalog_products") - before == (
        pages if indexed else 0
    )  # every page the index ranked, read by id


async def test_filters_narrow_the_results(stub: pb_grpc.CatalogServiceAsyncStub) -> None:
    response = await stub.SearchProducts(
        pb.SearchProductsRequest(
            query="queso",
            near=CAZORLA,
            radius_km=10,
            min_price=money_pb2.Money(currency_code="EUR", amount_cents=1000),
            in_stock_only=True,
            page_size=50,
        )
    )
    assert response.results
    for result in response.results:
        product = result.product
        assert product.locality == "Cazorla"
        assert result.distance_km <= 10
        assert product.price.amount_cents >= 1000
        assert product.in_stock
        assert product.available_quantity > 0
    by_category = await stub.SearchProducts(pb.SearchProductsRequest(category="forja", page_size=100))
    assert by_category.total_size == sum(1 for p in PRODUCTS if p.category == "forja")


async def test_without_words_the_newest_come_first(stub: pb_grpc.CatalogServiceAsyncStub) -> None:
    # The fixture published the products a minute apart, in PRODUCTS' order.
    newest = [p.key for p in reversed(PRODUCTS)]
    everything = await every_page(stub, pb.SearchProductsRequest(page_size=100))
    assert everything == newest
    forja = await stub.SearchProducts(pb.SearchProductsRequest(category="forja", page_size=100))
    assert [r.product.product_id for r in forja.results] == [
        key for key in newest if key in {p.key for p in PRODUCTS if p.category == "forja"}
    ]
    assert {(r.score, r.distance_km) for r in forja.results} == {(0, 0)}


async def every_page(stub: pb_grpc.CatalogServiceAsyncStub, request: pb.SearchProductsRequest) -> list[str]:
    """The products of every page of a search, in order; each page's total the same."""
    found: list[str] = []
    totals = set()
    while True:
        page = await stub.SearchProducts(request)
        found += [r.product.product_id for r in page.results]
        totals.add(page.total_size)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert totals == {len(found)}
    return found


async def test_a_search_near_a_point_without_words_is_nearest_first_and_counted_exactly(
    stub: pb_grpc.CatalogServiceAsyncStub,
) -> None:
    workshops = {a.key: a for a in ARTISANS}

    def km(p: Any) -> float:
        w = workshops[p.artisan_key]
        return distance_km(w.latitude, w.longitude, CAZORLA.latitude, CAZORLA.longitude)

    within = sorted((km(p), p.key) for p in PRODUCTS if km(p) <= 40)
    assert 0 < len(within) < len(PRODUCTS), "the radius takes some workshops and leaves others"
    first = await stub.SearchProducts(pb.SearchProductsRequest(near=CAZORLA, radius_km=40, page_size=100))
    assert first.total_size == len(within)
    got = [(r.distance_km, r.product.product_id) for r in first.results]
    assert [d for d, _ in got] == sorted(d for d, _ in got), "nearest first"
    assert {i for _, i in got} <= {i for _, i in within}
    for d, product_id in got:
        assert d == pytest.approx(dict((i, k) for k, i in within)[product_id], abs=1e-3)
    request = pb.SearchProductsRequest(near=CAZORLA, radius_km=40, page_size=10)
    request.page_token = encode_page_token(len(within) + 5, filters_of(request).fingerprint())
    past_the_end = await stub.SearchProducts(request)  # counted apart, with the same distances
    assert (list(past_the_end.results), past_the_end.total_size) == ([], len(within))
    # Nearest first, then newest (the fixture published the products a minute apart, in order).
    published = {p.key: i for i, p in enumerate(PRODUCTS)}
    nearest = [key for _, key in sorted(within, key=lambda w: (round(w[0], 9), -published[w[1]]))]
    paged = await every_page(stub, pb.SearchProductsRequest(near=CAZORLA, radius_km=40, page_size=7))
    assert paged == nearest


async def test_near_more_places_than_the_index_counts_the_search_runs_in_sql_alike(
    stub: pb_grpc.CatalogServiceAsyncStub, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if request.node.callspec.params["catalog"] != "index":
        pytest.skip("the index's own limit")
    searches = [
        pb.SearchProductsRequest(near=CAZORLA, radius_km=40, page_size=100),
        pb.SearchProductsRequest(query="queso", near=CAZORLA, radius_km=60, page_size=100),
    ]
    by_index = [await stub.SearchProducts(s) for s in searches]
    before = engines()
    monkeypatch.setattr(index_module, "MAX_PLACES", 1)
    by_sql = [await stub.SearchProducts(s) for s in searches]
    assert engines()["sql"] - before["sql"] == 2
    for index_page, sql_page in zip(by_index, by_sql, strict=True):
        assert sql_page.total_size == index_page.total_size == len(index_page.results) > 0
        assert {r.product.product_id for r in sql_page.results} == {
            r.product.product_id for r in index_page.results
        }


async def test_pages_cover_every_result_once(stub: pb_grpc.CatalogServiceAsyncStub) -> None:
    seen: list[str] = []
    token = ""
    total = -1
    while True:
        page = await stub.SearchProducts(
            pb.SearchProductsRequest(query="aceite", page_size=7, page_token=token)
        )
        total = page.total_size
        seen += [r.product.product_id for r in page.results]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == total
    assert total > 7

    first = await stub.SearchProducts(pb.SearchProductsRequest(query="aceite", page_size=7))
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await stub.SearchProducts(pb.SearchProductsRequest(query="miel", page_token=first.next_page_token))
    assert other.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details_of(other.value)[1][0][0] == "page_token"


async def test_bad_searches_name_the_fields(stub: pb_grpc.CatalogServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.SearchProducts(
            pb.SearchProductsRequest(
                query="x" * 201,
                category="c" * 101,
                artisan_id="a" * 101,
                page_token="t" * 201,
                radius_km=5,
                min_price=money_pb2.Money(currency_code="USD", amount_cents=500),
                max_price=money_pb2.Money(currency_code="EUR", amount_cents=100),
                page_size=101,
            )
        )
    assert {f for f, _ in details_of(bad.value)[1]} == {
        "query",
        "category",
        "artisan_id",
        "page_token",
        "radius_km",
        "min_price.currency_code",
        "max_price",
        "page_size",
    }


async def test_projections_follow_the_events(
    stub: pb_grpc.CatalogServiceAsyncStub, catalog: RunningService
) -> None:
    await publish_event(
        catalog,
        artisan_events_pb2.ProductPublished(
            product_id="p-nuevo",
            artisan_id="quesada-madera",
            name="Tabla de olivo para jamón",
            description="Tabla jamonera de madera de olivo.",
            category="madera",
            price=money_pb2.Money(currency_code="EUR", amount_cents=5900),
            initial_stock=0,
        ),
        "p-nuevo",
        source="artisans",
    )

    async def searchable() -> bool:
        return "Tabla de olivo para jamón" in await names(stub, "jamonera")

    await eventually(searchable, what="the new product searchable")
    product = (await stub.GetProduct(pb.GetProductRequest(product_id="p-nuevo"))).product
    assert (product.in_stock, product.locality) == (False, "Quesada")

    await publish_event(
        catalog,
        inventory_events_pb2.StockAdjusted(
            product_id="p-nuevo",
            delta=4,
            stock=inventory_events_pb2.StockLevel(product_id="p-nuevo", on_hand=4, available=4),
        ),
        "p-nuevo",
        source="inventory",
    )
    await publish_event(
        catalog,
        inventory_events_pb2.LowStockWarning(product_id="p-nuevo", available=4, threshold=5),
        "p-nuevo",
        source="inventory",
    )

    async def in_stock_and_low() -> bool:
        p = (await stub.GetProduct(pb.GetProductRequest(product_id="p-nuevo"))).product
        return p.in_stock and p.available_quantity == 4 and p.low_stock

    await eventually(in_stock_and_low, what="availability and low stock projected")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetProduct(pb.GetProductRequest(product_id="nope"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def _published(product_id: str, name: str) -> artisan_events_pb2.ProductPublished:
    return artisan_events_pb2.ProductPublished(
        product_id=product_id,
        artisan_id="quesada-madera",
        name=name,
        category="madera",
        price=money_pb2.Money(currency_code="EUR", amount_cents=3900),
    )


def _product_event(
    kind: type[artisan_events_pb2.ProductUpdated] | type[artisan_events_pb2.ProductWithdrawn],
    product_id: str,
    name: str,
    revision: int,
) -> artisan_events_pb2.ProductUpdated | artisan_events_pb2.ProductWithdrawn:
    event = kind(
        product_id=product_id,
        artisan_id="quesada-madera",
        name=name,
        description="Tabla de madera de olivo.",
        category="madera",
        price=money_pb2.Money(currency_code="EUR", amount_cents=4500),
        revision=revision,
    )
    event.publish_time.FromDatetime(datetime(2026, 11, 1, tzinfo=UTC))
    if isinstance(event, artisan_events_pb2.ProductWithdrawn):
        event.withdraw_time.FromDatetime(datetime(2026, 11, 3, tzinfo=UTC))
    return event


async def test_a_changed_product_is_found_as_it_is_now_and_a_withdrawn_one_no_more(
    stub: pb_grpc.CatalogServiceAsyncStub, catalog: RunningService, request: pytest.FixtureRequest
) -> None:
    mode = request.node.callspec.params["catalog"]
    changed, withdrawn = f"p-cambiado-{mode}", f"p-retirado-{mode}"
    await publish_event(
        catalog, _published(changed, "Tabla de olivo para quesos"), changed, source="artisans"
    )
    update = _product_event(artisan_events_pb2.ProductUpdated, changed, "Tabla de olivo para embutidos", 2)
    await publish_event(catalog, update, changed, source="artisans")

    async def renamed() -> bool:
        try:
            product = (await stub.GetProduct(pb.GetProductRequest(product_id=changed))).product
        except grpc.aio.AioRpcError:
            return False
        return (
            (product.name, product.price.amount_cents, product.revision)
            == ("Tabla de olivo para embutidos", 4500, 2)
            and "Tabla de olivo para embutidos" in await names(stub, "embutidos")
            and "Tabla de olivo para quesos" not in await names(stub, "tabla quesos")
        )

    await eventually(renamed, what="the product found by its new name only, at its new price")
    found = await stub.SearchProducts(pb.SearchProductsRequest(query="embutidos"))
    assert [r.product.revision for r in found.results if r.product.product_id == changed] == [2]

    # A product's events arriving in reverse: its withdrawal first, its publication last.
    for event in (
        _product_event(artisan_events_pb2.ProductWithdrawn, withdrawn, "Tabla de olivo para pan", 3),
        _product_event(artisan_events_pb2.ProductUpdated, withdrawn, "Tabla de olivo para pan", 2),
        _published(withdrawn, "Tabla de olivo para pan"),
    ):
        await publish_event(catalog, event, withdrawn, source="artisans")
    await publish_event(
        catalog,
        _product_event(artisan_events_pb2.ProductWithdrawn, changed, "Tabla de olivo para embutidos", 3),
        changed,
        source="artisans",
    )

    async def both_gone() -> bool:
        reasons = []
        for product_id in (changed, withdrawn):
            try:
                await stub.GetProduct(pb.GetProductRequest(product_id=product_id))
            except grpc.aio.AioRpcError as error:
                info = details_of(error)[0]
                reasons.append((error.code(), info and info.reason))
        return reasons == [(grpc.StatusCode.NOT_FOUND, "PRODUCT_WITHDRAWN")] * 2

    await eventually(both_gone, what="both withdrawn, whatever order their events came in")
    rows = await catalog.infra.pool.fetch(
        "SELECT product_id, revision FROM products WHERE product_id = ANY($1::text[]) ORDER BY product_id",
        [changed, withdrawn],
    )
    assert [(r["product_id"], r["revision"]) for r in rows] == [(changed, 3), (withdrawn, 3)]

    async def found_nowhere() -> bool:
        # Counted nowhere either: no search (in the index or in SQL) still matches them.
        mine = await stub.SearchProducts(pb.SearchProductsRequest(artisan_id="quesada-madera", page_size=100))
        only_theirs = await stub.SearchProducts(pb.SearchProductsRequest(query="embutidos"))
        return (
            not {changed, withdrawn} & {r.product.product_id for r in mine.results}
            and mine.total_size == len(mine.results)
            and only_theirs.total_size == 0
        )

    await eventually(found_nowhere, what="no search finds or counts a withdrawn product")
