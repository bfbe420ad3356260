"""artisans over gRPC: onboarding and publishing, and their events reaching inventory, catalog and geo."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable

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
from a4co.type.v1 import lat_lng_pb2, money_pb2, return_exception_pb2
from services.artisans.__main__ import build
from services.platform.auth import Role
from services.platform.grpc.status import details_of
from services.platform.local_servers import ServerUrls
from services.platform.paging import OTHER_FILTERS
from tests.integration.services.conftest import BUILDS
from tests.integration.services.harness import (
    Keys,
    RunningService,
    running_services,
    stream_events,
    token,
)
from tests.integration.services.test_grpcurl import call, grpcurl
from tests.support.rpc import failure
from tests.support.waiting import eventually

UBEDA = lat_lng_pb2.LatLng(latitude=38.0133, longitude=-3.3706)


@pytest_asyncio.fixture
async def marketplace(urls: ServerUrls, prefix: str, keys: Keys) -> AsyncIterator[dict[str, RunningService]]:
    builds = {"artisans": build, **{k: BUILDS[k] for k in ("inventory", "catalog", "geo")}}
    async with running_services(builds, urls, prefix, keys) as running:
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


def changing(product_id: str, *paths: str, revision: int = 0, **values: object) -> pb.UpdateProductRequest:
    request = pb.UpdateProductRequest(
        product_id=product_id,
        product=pb.PublishedProduct(**values),  # type: ignore[arg-type]
        expected_revision=revision,
    )
    request.update_mask.paths.extend(paths)
    return request


async def on_sale(
    marketplace: dict[str, RunningService], keys: Keys
) -> tuple[pb_grpc.ArtisansServiceAsyncStub, tuple[tuple[str, str], ...], pb.PublishedProduct]:
    """artisan-tito onboarded with a product on sale: a stub, their token and the product."""
    stub = pb_grpc.ArtisansServiceStub(marketplace["artisans"].channel)
    me = token(keys, "artisan-tito", Role.ARTISAN)
    await stub.OnboardArtisan(onboarding(), metadata=me)
    return stub, me, (await stub.PublishProduct(publishing(), metadata=me)).product


async def test_an_artisan_changes_a_product_then_withdraws_it_and_everyone_follows(
    marketplace: dict[str, RunningService], keys: Keys
) -> None:
    stub, me, published = await on_sale(marketplace, keys)
    assert (published.revision, published.update_time) == (1, published.publish_time)
    pid = published.product_id

    euros = money_pb2.Money(currency_code="EUR", amount_cents=2900)
    changed = (
        await stub.UpdateProduct(
            changing(
                pid, "name", "price", revision=1, name=" Fuente de olivo ", price=euros, description="x"
            ),
            metadata=me,
        )
    ).product
    assert (changed.name, changed.price.amount_cents, changed.revision) == ("Fuente de olivo", 2900, 2)
    assert changed.description == published.description, "a field the mask does not name is not read"
    assert changed.update_time.ToDatetime() > published.publish_time.ToDatetime()
    # The same values again change nothing: the same revision, and no event.
    same = (await stub.UpdateProduct(changing(pid, "name", name="Fuente de olivo"), metadata=me)).product
    assert same == changed

    stale = await failure(stub.UpdateProduct(changing(pid, "name", revision=1, name="Otra"), metadata=me))
    info = details_of(stale)[0]
    assert (stale.code(), info.reason, info.metadata["revision"]) == (  # type: ignore[union-attr]
        grpc.StatusCode.ABORTED,
        "REVISION_CHANGED",
        "2",
    )
    someone = token(keys, "artisan-otro", Role.ARTISAN)
    theirs = await failure(stub.UpdateProduct(changing(pid, "name", name="Mía"), metadata=someone))
    assert (theirs.code(), details_of(theirs)[0].reason) == (  # type: ignore[union-attr]
        grpc.StatusCode.NOT_FOUND,
        "PRODUCT_NOT_FOUND",
    )
    assert (
        await failure(stub.WithdrawProduct(pb.WithdrawProductRequest(product_id=pid), metadata=someone))
    ).code() == (grpc.StatusCode.NOT_FOUND)
    bad = await failure(
        stub.UpdateProduct(
            changing(pid, "initial_stock", "price", price=money_pb2.Money(currency_code="USD")), metadata=me
        )
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in details_of(bad)[1]} == {
        "update_mask",
        "product.price.currency_code",
        "product.price.amount_cents",
    }
    nothing = await failure(stub.UpdateProduct(changing(pid), metadata=me))
    assert details_of(nothing)[1] == [("update_mask", "must name at least one field")]
    backwards = await failure(
        stub.UpdateProduct(changing(pid, "name", revision=-1, name="Otra"), metadata=me)
    )
    assert details_of(backwards)[1] == [("expected_revision", "must not be negative")]

    catalog = catalog_grpc.CatalogServiceStub(marketplace["catalog"].channel)
    geo = geo_grpc.GeoServiceStub(marketplace["geo"].channel)

    async def found(query: str) -> list[str]:
        page = await catalog.SearchProducts(catalog_pb.SearchProductsRequest(query=query))
        return [r.product.product_id for r in page.results]

    async def in_catalog() -> bool:
        try:
            product = (await catalog.GetProduct(catalog_pb.GetProductRequest(product_id=pid))).product
        except grpc.aio.AioRpcError:
            return False
        return (product.name, product.price.amount_cents) == ("Fuente de olivo", 2900) and await found(
            "olivo"
        ) == [pid]

    await eventually(in_catalog, timeout=20, what="the change in the catalogue and its search")

    withdrawn = (await stub.WithdrawProduct(pb.WithdrawProductRequest(product_id=pid), metadata=me)).product
    assert (withdrawn.revision, withdrawn.HasField("withdraw_time")) == (3, True)
    again = (await stub.WithdrawProduct(pb.WithdrawProductRequest(product_id=pid), metadata=me)).product
    assert again == withdrawn, "withdrawing again returns it as it is"
    late = await failure(stub.UpdateProduct(changing(pid, "name", name="Otra"), metadata=me))
    assert (late.code(), details_of(late)[0].reason) == (  # type: ignore[union-attr]
        grpc.StatusCode.FAILED_PRECONDITION,
        "PRODUCT_WITHDRAWN",
    )

    async def gone() -> bool:
        try:
            await catalog.GetProduct(catalog_pb.GetProductRequest(product_id=pid))
        except grpc.aio.AioRpcError as error:
            reason = details_of(error)[0]
            if reason is None or reason.reason != "PRODUCT_WITHDRAWN":
                return False
        else:
            return False
        nearby = await geo.FindNearbyArtisans(geo_pb.FindNearbyArtisansRequest(location=UBEDA, radius_km=5))
        return await found("olivo") == [] and [(a.artisan_id, a.product_count) for a in nearby.artisans] == [
            ("artisan-tito", 0)
        ]

    await eventually(gone, timeout=20, what="the product off the catalogue, its search and the map")
    await eventually(
        lambda: _names(
            marketplace["artisans"],
            ["ArtisanOnboarded", "ProductPublished", "ProductUpdated", "ProductWithdrawn"],
        ),
        what="one event for each change, none for a change of nothing or a second withdrawal",
    )


async def test_the_readmes_grpcurl_commands_change_and_withdraw_a_product(
    marketplace: dict[str, RunningService], keys: Keys
) -> None:
    _, me, published = await on_sale(marketplace, keys)
    pid = published.product_id
    bearer = dict(me)["authorization"].removeprefix("Bearer ")
    address, service = marketplace["artisans"].address, "a4co.artisans.v1.ArtisansService"
    changed = await call(
        address,
        f"{service}/UpdateProduct",
        {
            "product_id": pid,
            "product": {"price": {"currency_code": "EUR", "amount_cents": "2900"}},
            "update_mask": {"paths": ["price"]},
            "expected_revision": 1,
        },
        token=bearer,
    )
    assert changed["product"]["price"]["amount_cents"] == "2900"  # type: ignore[index]
    assert changed["product"]["revision"] == 2  # type: ignore[index]
    withdrawn = await call(address, f"{service}/WithdrawProduct", {"product_id": pid}, token=bearer)
    assert withdrawn["product"]["revision"] == 3  # type: ignore[index]
    assert "withdraw_time" in withdrawn["product"]  # type: ignore[operator]
    listed = await call(address, f"{service}/ListProducts", {"show_withdrawn": True}, token=bearer)
    assert listed["products"] == [withdrawn["product"]]
    code, out = await grpcurl(
        address,
        f"{service}/UpdateProduct",
        data={"product_id": pid, "product": {"name": "Otra"}, "update_mask": {"paths": ["name"]}},
        token=bearer,
    )
    assert code != 0, out
    assert "FailedPrecondition" in out, out
    assert "PRODUCT_WITHDRAWN" in out, out
    # The workshop as declared, then moved to Baeza.
    declared = await call(address, f"{service}/GetArtisan", {}, token=bearer)
    assert (declared["artisan"]["locality"], declared["artisan"]["revision"]) == ("Úbeda", 1)  # type: ignore[index]
    moved = await call(
        address,
        f"{service}/UpdateArtisan",
        {
            "artisan": {"locality": "Baeza", "location": {"latitude": 37.9938, "longitude": -3.47}},
            "update_mask": {"paths": ["locality", "location"]},
        },
        token=bearer,
    )
    assert (moved["artisan"]["locality"], moved["artisan"]["revision"]) == ("Baeza", 2)  # type: ignore[index]
    # The workshop leaves the marketplace (its product was withdrawn already).
    left = await call(address, f"{service}/OffboardArtisan", {}, token=bearer)
    assert (left["artisan"]["revision"], "offboard_time" in left["artisan"]) == (3, True)  # type: ignore[index,operator]
    assert "withdrawn_products" not in left, "0, JSON's default"


async def test_an_artisan_lists_their_products_newest_first_the_withdrawn_when_asked(
    marketplace: dict[str, RunningService], keys: Keys
) -> None:
    stub, me, first = await on_sale(marketplace, keys)
    second = (await stub.PublishProduct(publishing(), metadata=me)).product
    third = (await stub.PublishProduct(publishing(), metadata=me)).product
    await stub.WithdrawProduct(pb.WithdrawProductRequest(product_id=second.product_id), metadata=me)

    async def listed(
        show_withdrawn: bool, page_size: int, who: tuple[tuple[str, str], ...] = me
    ) -> list[str]:
        ids, token = [], ""
        while True:
            page = await stub.ListProducts(
                pb.ListProductsRequest(page_size=page_size, page_token=token, show_withdrawn=show_withdrawn),
                metadata=who,
            )
            assert len(page.products) <= page_size
            ids += [p.product_id for p in page.products]
            if not (token := page.next_page_token):
                return ids

    assert await listed(False, 20) == [third.product_id, first.product_id]
    assert await listed(True, 1) == [third.product_id, second.product_id, first.product_id]
    page = await stub.ListProducts(pb.ListProductsRequest(show_withdrawn=True), metadata=me)
    assert [(p.revision, p.HasField("withdraw_time")) for p in page.products] == [
        (1, False),
        (2, True),
        (1, False),
    ]
    # A page follows on from the last product of the one before (decision 41): one published
    # meanwhile goes to the top, not into the next page; a token is for the filter it came with.
    top = await stub.ListProducts(pb.ListProductsRequest(page_size=1, show_withdrawn=True), metadata=me)
    fourth = (await stub.PublishProduct(publishing(), metadata=me)).product
    after_top = pb.ListProductsRequest(page_size=1, page_token=top.next_page_token, show_withdrawn=True)
    assert [p.product_id for p in (await stub.ListProducts(after_top, metadata=me)).products] == [
        second.product_id
    ]
    assert await listed(True, 2) == [fourth.product_id, third.product_id, second.product_id, first.product_id]
    other = await failure(
        stub.ListProducts(pb.ListProductsRequest(page_token=top.next_page_token), metadata=me)
    )
    assert details_of(other)[1] == [("page_token", OTHER_FILTERS)]
    someone = token(keys, "artisan-otro", Role.ARTISAN)
    assert await listed(True, 20, someone) == []
    bad = await failure(
        stub.ListProducts(pb.ListProductsRequest(page_size=101, page_token="nope!"), metadata=me)
    )
    assert {f for f, _ in details_of(bad)[1]} == {"page_size", "page_token"}  # the token too, beside the size
    forged = await failure(stub.ListProducts(pb.ListProductsRequest(page_token="bm9wZSE="), metadata=me))
    assert details_of(forged)[1] == [("page_token", "is not a token from this API")]


BAEZA = lat_lng_pb2.LatLng(latitude=37.9938, longitude=-3.4700)


def moving(*paths: str, revision: int = 0, **values: object) -> pb.UpdateArtisanRequest:
    request = pb.UpdateArtisanRequest(artisan=pb.Artisan(**values), expected_revision=revision)  # type: ignore[arg-type]
    request.update_mask.paths.extend(paths)
    return request


async def test_an_artisan_moves_and_renames_the_workshop_and_search_and_map_follow(
    marketplace: dict[str, RunningService], keys: Keys
) -> None:
    stub, me, published = await on_sale(marketplace, keys)
    onboarded = (await stub.GetArtisan(pb.GetArtisanRequest(), metadata=me)).artisan
    assert (onboarded.display_name, onboarded.revision) == ("Alfarería Tito", 1)
    assert onboarded.update_time == onboarded.onboard_time

    moved = (
        await stub.UpdateArtisan(
            moving(
                "display_name", "locality", "location", "craft", revision=1,
                display_name=" Alfarería Tito e Hijos ", locality="Baeza", location=BAEZA, craft="madera",
                bio="no leído: la máscara no lo nombra",
            ),
            metadata=me,
        )
    ).artisan  # fmt: skip
    assert (moved.display_name, moved.locality, moved.craft, moved.revision) == (
        "Alfarería Tito e Hijos",
        "Baeza",
        "madera",
        2,
    )
    assert (moved.location.latitude, moved.location.longitude) == (BAEZA.latitude, BAEZA.longitude)
    assert moved.bio == onboarded.bio, "a field the mask does not name is not read"
    assert moved.update_time.ToDatetime() > onboarded.onboard_time.ToDatetime()
    assert moved.onboard_time == onboarded.onboard_time
    assert (await stub.GetArtisan(pb.GetArtisanRequest(), metadata=me)).artisan == moved
    # The same values again change nothing: the same revision, and no event.
    same = await stub.UpdateArtisan(moving("locality", locality="Baeza"), metadata=me)
    assert same.artisan == moved

    catalog = catalog_grpc.CatalogServiceStub(marketplace["catalog"].channel)
    geo = geo_grpc.GeoServiceStub(marketplace["geo"].channel)

    async def followed() -> bool:
        near_baeza = await catalog.SearchProducts(
            catalog_pb.SearchProductsRequest(query="fuente", near=BAEZA, radius_km=1)
        )
        near_ubeda = await catalog.SearchProducts(
            catalog_pb.SearchProductsRequest(query="fuente", near=UBEDA, radius_km=1)
        )
        in_baeza = await geo.FindNearbyArtisans(geo_pb.FindNearbyArtisansRequest(location=BAEZA, radius_km=1))
        in_ubeda = await geo.FindNearbyArtisans(geo_pb.FindNearbyArtisansRequest(location=UBEDA, radius_km=1))
        woodwork = await geo.FindNearbyArtisans(
            geo_pb.FindNearbyArtisansRequest(location=BAEZA, radius_km=1, craft="madera")
        )
        pottery = await geo.FindNearbyArtisans(  # where it was, under the craft it had
            geo_pb.FindNearbyArtisansRequest(location=UBEDA, radius_km=1, craft="ceramica")
        )
        quote = await geo.QuoteDelivery(
            geo_pb.QuoteDeliveryRequest(artisan_id="artisan-tito", destination=BAEZA)
        )
        return (
            quote.distance_km < 0.1
            and [(r.product.product_id, r.product.locality) for r in near_baeza.results]
            == [(published.product_id, "Baeza")]
            and not near_ubeda.results
            and [(a.artisan_id, a.display_name) for a in in_baeza.artisans]
            == [("artisan-tito", "Alfarería Tito e Hijos")]
            and not in_ubeda.artisans
            and [a.artisan_id for a in woodwork.artisans] == ["artisan-tito"]
            and not pottery.artisans
        )

    await eventually(
        followed, timeout=20, what="the search and the map at the new place, under the new craft"
    )
    await eventually(
        lambda: _names(marketplace["artisans"], ["ArtisanOnboarded", "ProductPublished", "ArtisanUpdated"]),
        what="one ArtisanUpdated, none for a change of nothing",
    )
    [event] = [
        e
        for e in await stream_events(marketplace["artisans"], "ARTISANS")
        if e.definition.name == "ArtisanUpdated"
    ]
    assert (event.payload.revision, list(event.payload.changed_fields)) == (  # type: ignore[attr-defined]
        2,
        ["display_name", "craft", "locality", "location"],
    )


async def test_a_workshop_update_is_refused_with_every_bad_field_or_a_stale_revision(
    marketplace: dict[str, RunningService], keys: Keys
) -> None:
    stub = pb_grpc.ArtisansServiceStub(marketplace["artisans"].channel)
    me = token(keys, "artisan-nuevo", Role.ARTISAN)
    for not_yet in (
        await failure(stub.GetArtisan(pb.GetArtisanRequest(), metadata=me)),
        await failure(stub.UpdateArtisan(moving("bio", bio="Hola"), metadata=me)),
    ):
        assert (not_yet.code(), details_of(not_yet)[0].reason) == (  # type: ignore[union-attr]
            grpc.StatusCode.FAILED_PRECONDITION,
            "NOT_ONBOARDED",
        )
    await stub.OnboardArtisan(onboarding(), metadata=me)
    madrid = lat_lng_pb2.LatLng(latitude=40.4, longitude=-3.7)
    bad = await failure(
        stub.UpdateArtisan(
            moving(
                "display_name",
                "craft",
                "location",
                "onboard_time",
                display_name="X",
                craft="plastico",
                location=madrid,
            ),
            metadata=me,
        )
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in details_of(bad)[1]] == [
        "update_mask",
        "artisan.display_name",
        "artisan.craft",
        "artisan.location",
    ]
    nowhere = await failure(stub.UpdateArtisan(moving("location"), metadata=me))
    assert details_of(nowhere)[1] == [("artisan.location", "is required")]
    nothing = await failure(stub.UpdateArtisan(moving(), metadata=me))
    assert details_of(nothing)[1] == [("update_mask", "must name at least one field")]
    await stub.UpdateArtisan(moving("bio", bio="Cerámica de Úbeda desde 1890."), metadata=me)
    stale = await failure(stub.UpdateArtisan(moving("bio", revision=1, bio="Otra"), metadata=me))
    info = details_of(stale)[0]
    assert (stale.code(), info.reason, info.metadata["revision"]) == (  # type: ignore[union-attr]
        grpc.StatusCode.ABORTED,
        "REVISION_CHANGED",
        "2",
    )
    customer = await failure(
        stub.GetArtisan(pb.GetArtisanRequest(), metadata=token(keys, "c-1", Role.CUSTOMER))
    )
    assert customer.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (
        await stub.GetArtisan(pb.GetArtisanRequest(), metadata=me)
    ).artisan.bio == "Cerámica de Úbeda desde 1890."


async def test_a_workshop_leaves_the_marketplace_with_its_products_and_everyone_follows(
    marketplace: dict[str, RunningService], keys: Keys
) -> None:
    stub, me, first = await on_sale(marketplace, keys)
    second = (await stub.PublishProduct(publishing(), metadata=me)).product
    third = (await stub.PublishProduct(publishing(), metadata=me)).product
    await stub.WithdrawProduct(pb.WithdrawProductRequest(product_id=third.product_id), metadata=me)
    catalog = catalog_grpc.CatalogServiceStub(marketplace["catalog"].channel)
    geo = geo_grpc.GeoServiceStub(marketplace["geo"].channel)

    async def on_sale_and_map() -> tuple[set[str], list[str]]:
        found = await catalog.SearchProducts(catalog_pb.SearchProductsRequest(query="fuente"))
        nearby = await geo.FindNearbyArtisans(geo_pb.FindNearbyArtisansRequest(location=UBEDA, radius_km=5))
        return {r.product.product_id for r in found.results}, [a.artisan_id for a in nearby.artisans]

    async def selling() -> bool:
        return await on_sale_and_map() == ({first.product_id, second.product_id}, ["artisan-tito"])

    await eventually(selling, timeout=20, what="two products found and the workshop on the map")

    left = await stub.OffboardArtisan(pb.OffboardArtisanRequest(), metadata=me)
    assert (left.withdrawn_products, left.artisan.revision, left.artisan.HasField("offboard_time")) == (
        2,
        2,
        True,
    )
    again = await stub.OffboardArtisan(pb.OffboardArtisanRequest(), metadata=me)
    assert (again.artisan, again.withdrawn_products) == (left.artisan, 0), "leaving again changes nothing"
    assert (await stub.GetArtisan(pb.GetArtisanRequest(), metadata=me)).artisan == left.artisan
    for refused in (
        await failure(stub.PublishProduct(publishing(), metadata=me)),
        await failure(stub.UpdateArtisan(moving("bio", bio="Volvemos"), metadata=me)),
    ):
        assert (refused.code(), details_of(refused)[0].reason) == (  # type: ignore[union-attr]
            grpc.StatusCode.FAILED_PRECONDITION,
            "ARTISAN_OFFBOARDED",
        )
    withdrawn = await failure(
        stub.UpdateProduct(changing(first.product_id, "name", name="Otra"), metadata=me)
    )
    assert details_of(withdrawn)[0].reason == "PRODUCT_WITHDRAWN"  # type: ignore[union-attr]
    assert (await failure(stub.OnboardArtisan(onboarding(), metadata=me))).code() == (
        grpc.StatusCode.ALREADY_EXISTS
    )
    listed = await stub.ListProducts(pb.ListProductsRequest(show_withdrawn=True), metadata=me)
    assert [p.HasField("withdraw_time") for p in listed.products] == [True, True, True]
    assert not (await stub.ListProducts(pb.ListProductsRequest(), metadata=me)).products

    async def gone() -> bool:
        return await on_sale_and_map() == (set(), [])

    await eventually(gone, timeout=20, what="the products off the search, the workshop off the map")
    late = await failure(catalog.GetProduct(catalog_pb.GetProductRequest(product_id=second.product_id)))
    assert details_of(late)[0].reason == "PRODUCT_WITHDRAWN"  # type: ignore[union-attr]
    published = await stream_events(marketplace["artisans"], "ARTISANS")
    assert [e.definition.name for e in published] == [
        "ArtisanOnboarded", *["ProductPublished"] * 3, *["ProductWithdrawn"] * 3, "ArtisanOffboarded",
    ]  # fmt: skip
    withdrawals = [
        (e.payload.product_id, e.payload.with_workshop)  # type: ignore[attr-defined]
        for e in published
        if e.definition.name == "ProductWithdrawn"
    ]
    assert withdrawals[0] == (third.product_id, False), "withdrawn by itself"
    assert set(withdrawals[1:]) == {(first.product_id, True), (second.product_id, True)}
    last = published[-1].payload
    assert (last.revision, last.withdrawn_products, last.display_name) == (  # type: ignore[attr-defined]
        2,
        2,
        "Alfarería Tito",
    )


async def test_who_may_offboard_a_workshop(marketplace: dict[str, RunningService], keys: Keys) -> None:
    stub = pb_grpc.ArtisansServiceStub(marketplace["artisans"].channel)
    artisan_id = str(uuid.uuid4())
    theirs = token(keys, artisan_id, Role.ARTISAN)
    await stub.OnboardArtisan(onboarding(), metadata=theirs)
    await stub.PublishProduct(publishing(), metadata=theirs)
    admin = token(keys, str(uuid.uuid4()), Role.ADMIN)

    def offboard(who: tuple[tuple[str, str]], named: str = "") -> Awaitable[pb.OffboardArtisanResponse]:
        return stub.OffboardArtisan(pb.OffboardArtisanRequest(artisan_id=named), metadata=who)

    cases = [
        (token(keys, str(uuid.uuid4()), Role.ARTISAN), artisan_id, "PERMISSION_DENIED", "NOT_OWNER"),
        (token(keys, "c-1", Role.CUSTOMER), "", "PERMISSION_DENIED", "ROLE_REQUIRED"),
        (token(keys, "artisan-nuevo", Role.ARTISAN), "", "FAILED_PRECONDITION", "NOT_ONBOARDED"),
        (admin, str(uuid.uuid4()), "NOT_FOUND", "ARTISAN_NOT_FOUND"),
        (admin, "", "INVALID_ARGUMENT", "INVALID_REQUEST"),
        (admin, "taller-7", "INVALID_ARGUMENT", "INVALID_REQUEST"),
    ]
    for who, named, code, reason in cases:
        refused = await failure(offboard(who, named))
        assert (refused.code().name, details_of(refused)[0].reason) == (code, reason), named  # type: ignore[union-attr]
    assert [f for f, _ in details_of(await failure(offboard(admin)))[1]] == ["artisan_id"]
    # An artisan who asked the operators: an admin names their workshop.
    left = await offboard(admin, artisan_id)
    assert (left.artisan.artisan_id, left.withdrawn_products) == (artisan_id, 1)
    assert (await stub.GetArtisan(pb.GetArtisanRequest(), metadata=theirs)).artisan == left.artisan


async def test_no_product_stays_on_sale_when_published_while_its_workshop_leaves(
    marketplace: dict[str, RunningService], keys: Keys
) -> None:
    stub, me, _ = await on_sale(marketplace, keys)

    async def publish() -> str:
        try:
            await stub.PublishProduct(publishing(), metadata=me)
        except grpc.aio.AioRpcError as error:
            return str(details_of(error)[0].reason)  # type: ignore[union-attr]
        return "published"

    leaving = stub.OffboardArtisan(pb.OffboardArtisanRequest(), metadata=me)
    *answers, left = await asyncio.gather(*(publish() for _ in range(12)), leaving)
    assert isinstance(left, pb.OffboardArtisanResponse)
    assert set(answers) <= {"published", "ARTISAN_OFFBOARDED"}
    pool = marketplace["artisans"].infra.pool
    assert await pool.fetchval("SELECT count(*) FROM products WHERE withdrawn_at IS NULL") == 0
    # Each product published before it left was withdrawn with it.
    assert left.withdrawn_products == 1 + answers.count("published")


async def test_a_product_excluded_from_returns_says_why_to_every_follower(
    marketplace: dict[str, RunningService], keys: Keys
) -> None:
    stub = pb_grpc.ArtisansServiceStub(marketplace["artisans"].channel)
    me = token(keys, "artisan-tito", Role.ARTISAN)
    await stub.OnboardArtisan(onboarding(), metadata=me)
    fresh = publishing()
    fresh.return_exception = return_exception_pb2.RETURN_EXCEPTION_PERISHABLE
    published = (await stub.PublishProduct(fresh, metadata=me)).product
    assert published.return_exception == return_exception_pb2.RETURN_EXCEPTION_PERISHABLE
    pid = published.product_id
    catalog = catalog_grpc.CatalogServiceStub(marketplace["catalog"].channel)

    async def shown(expected: int) -> bool:
        try:
            product = (await catalog.GetProduct(catalog_pb.GetProductRequest(product_id=pid))).product
        except grpc.aio.AioRpcError:
            return False
        page = await catalog.SearchProducts(catalog_pb.SearchProductsRequest(query="fuente"))
        return product.return_exception == expected and [
            r.product.return_exception for r in page.results
        ] == [expected]

    await eventually(lambda: shown(return_exception_pb2.RETURN_EXCEPTION_PERISHABLE), what="shown by catalog")

    # No longer perishable: a change like any other, with its event.
    returnable = (
        await stub.UpdateProduct(
            changing(
                pid, "return_exception", return_exception=return_exception_pb2.RETURN_EXCEPTION_UNSPECIFIED
            ),
            metadata=me,
        )
    ).product
    assert (returnable.return_exception, returnable.revision) == (
        return_exception_pb2.RETURN_EXCEPTION_UNSPECIFIED,
        2,
    )
    await eventually(
        lambda: shown(return_exception_pb2.RETURN_EXCEPTION_UNSPECIFIED), what="the change shown"
    )
    events = [e.payload for e in await stream_events(marketplace["artisans"], "ARTISANS")][-2:]
    assert [e.return_exception for e in events] == [  # type: ignore[attr-defined]
        return_exception_pb2.RETURN_EXCEPTION_PERISHABLE,
        return_exception_pb2.RETURN_EXCEPTION_UNSPECIFIED,
    ]
    assert list(events[1].changed_fields) == ["return_exception"]  # type: ignore[attr-defined]

    unknown = publishing()
    unknown.return_exception = 99  # type: ignore[assignment]
    refused = await failure(stub.PublishProduct(unknown, metadata=me))
    assert (refused.code(), [f for f, _ in details_of(refused)[1]]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["return_exception"],
    )
    refused = await failure(
        stub.UpdateProduct(changing(pid, "return_exception", return_exception=99), metadata=me)
    )
    assert [f for f, _ in details_of(refused)[1]] == ["product.return_exception"]
