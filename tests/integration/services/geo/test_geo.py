"""geo over gRPC: workshops from ArtisanOnboarded, GEOSEARCH, delivery quotes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from a4co.artisans.events.v1 import artisan_events_pb2
from a4co.geo.v1 import geo_service_pb2 as pb
from a4co.geo.v1 import geo_service_pb2_grpc as pb_grpc
from a4co.type.v1 import lat_lng_pb2
from services.geo import handlers
from services.geo.__main__ import build
from services.geo.adapters.geo_index import GeoIndex
from services.geo.domain import Point, ProductCount, Workshop
from services.platform.grpc.status import details_of
from services.platform.local_servers import LocalServers, ServerUrls
from tests.integration.services.harness import (
    Keys,
    RunningService,
    publish_event,
    running_service,
    settings_for,
)
from tests.support.announced import following
from tests.support.db import scalar_int
from tests.support.metrics import coalesced
from tests.support.servers import stoppable, stopped
from tests.support.waiting import eventually

SCHEMA = Path("services/geo/schema.sql")
WORKSHOPS = [
    ("a-ubeda", "Alfarería Tito", "ceramica", "Úbeda", 38.0133, -3.3706),
    ("a-baeza", "Aceites Baeza", "aceite", "Baeza", 37.9938, -3.4700),
    ("a-jaen", "Esparto Jaén", "esparto", "Jaén", 37.7796, -3.7849),
    ("a-cazorla", "Quesos Cazorla", "queso", "Cazorla", 37.9148, -3.0030),
    ("a-ubeda-2", "Cerámica Paco", "ceramica", "Úbeda", 38.0150, -3.3690),
]


def at(lat: float, lng: float) -> lat_lng_pb2.LatLng:
    return lat_lng_pb2.LatLng(latitude=lat, longitude=lng)


@pytest_asyncio.fixture
async def geo(urls: ServerUrls, prefix: str, keys: Keys) -> AsyncIterator[RunningService]:
    async with running_service("geo", build, SCHEMA, settings_for("geo", urls, prefix, keys)) as svc:
        for artisan_id, name, craft, town, lat, lng in WORKSHOPS:
            event = artisan_events_pb2.ArtisanOnboarded(
                artisan_id=artisan_id, display_name=name, craft=craft, locality=town, location=at(lat, lng)
            )
            await publish_event(svc, event, artisan_id, source="artisans")

        async def recorded() -> bool:
            return await scalar_int(svc.infra.pool, "SELECT count(*) FROM workshops") == len(WORKSHOPS)

        # The map is written after each commit: a workshop is recorded a moment before it is found.
        async def on_the_map() -> bool:
            everywhere = pb.FindNearbyArtisansRequest(location=at(37.9, -3.4), radius_km=200)
            found = await pb_grpc.GeoServiceStub(svc.channel).FindNearbyArtisans(everywhere)
            return len(found.artisans) == len(WORKSHOPS)

        await eventually(recorded, what="workshops recorded")
        await eventually(on_the_map, what="workshops on the map")
        yield svc


@pytest.fixture
def stub(geo: RunningService) -> pb_grpc.GeoServiceAsyncStub:
    return pb_grpc.GeoServiceStub(geo.channel)


async def test_nearby_workshops_nearest_first(stub: pb_grpc.GeoServiceAsyncStub) -> None:
    found = await stub.FindNearbyArtisans(
        pb.FindNearbyArtisansRequest(location=at(38.0133, -3.3706), radius_km=15)
    )
    assert [a.artisan_id for a in found.artisans] == ["a-ubeda", "a-ubeda-2", "a-baeza"]
    assert found.artisans[2].distance_km == pytest.approx(8.95, abs=0.2)
    assert found.artisans[0].locality == "Úbeda"

    pottery = await stub.FindNearbyArtisans(
        pb.FindNearbyArtisansRequest(location=at(38.0133, -3.3706), radius_km=100, craft="ceramica")
    )
    assert [a.artisan_id for a in pottery.artisans] == ["a-ubeda", "a-ubeda-2"]
    one = await stub.FindNearbyArtisans(
        pb.FindNearbyArtisansRequest(location=at(38.0133, -3.3706), radius_km=100, page_size=1)
    )
    assert len(one.artisans) == 1


async def test_searches_at_once_each_get_their_own_workshops(stub: pb_grpc.GeoServiceAsyncStub) -> None:
    """The searches of calls waiting together go to Redis in one pipeline (decision 28), and each
    call still answers what it answers alone."""
    searches = [
        pb.FindNearbyArtisansRequest(location=at(38.0133, -3.3706), radius_km=15),
        pb.FindNearbyArtisansRequest(location=at(38.0133, -3.3706), radius_km=100, craft="ceramica"),
        pb.FindNearbyArtisansRequest(location=at(37.7796, -3.7849), radius_km=10),
        pb.FindNearbyArtisansRequest(location=at(37.9148, -3.0030), radius_km=50, page_size=1),
        pb.FindNearbyArtisansRequest(location=at(40.4168, -3.7038), radius_km=20),  # Madrid: none
    ]
    alone = [[a.artisan_id for a in (await stub.FindNearbyArtisans(s)).artisans] for s in searches]
    assert alone[:4] == [
        ["a-ubeda", "a-ubeda-2", "a-baeza"],
        ["a-ubeda", "a-ubeda-2"],
        ["a-jaen"],
        ["a-cazorla"],
    ]
    callers = coalesced("geo_nearby")
    together = await asyncio.gather(*(stub.FindNearbyArtisans(s) for s in searches * 4))
    assert [[a.artisan_id for a in found.artisans] for found in together] == alone * 4
    assert coalesced("geo_nearby") - callers == len(together)


async def publish_products(geo: RunningService, artisan_id: str, *product_ids: str) -> None:
    for product_id in product_ids:
        event = artisan_events_pb2.ProductPublished(product_id=product_id, artisan_id=artisan_id)
        await publish_event(geo, event, product_id, source="artisans")


async def counts_near(stub: pb_grpc.GeoServiceAsyncStub, lat: float, lng: float) -> dict[str, int]:
    found = await stub.FindNearbyArtisans(pb.FindNearbyArtisansRequest(location=at(lat, lng), radius_km=15))
    return {a.artisan_id: a.product_count for a in found.artisans}


async def test_each_workshop_shows_its_number_of_products(
    stub: pb_grpc.GeoServiceAsyncStub, geo: RunningService
) -> None:
    await publish_products(geo, "a-ubeda", "p-1", "p-2", "p-1")  # p-1 twice: counted once
    await publish_products(geo, "a-baeza", "p-3")
    # A product can arrive before its workshop: counted once the workshop is onboarded.
    await publish_products(geo, "a-torreperogil", "p-4", "p-5")
    onboarded = artisan_events_pb2.ArtisanOnboarded(
        artisan_id="a-torreperogil", display_name="Forja", craft="forja", locality="Torreperogil",
        location=at(38.0347, -3.2880),
    )  # fmt: skip
    await publish_event(geo, onboarded, "a-torreperogil", source="artisans")
    expected = {"a-ubeda": 2, "a-ubeda-2": 0, "a-baeza": 1, "a-torreperogil": 2}

    async def counted() -> bool:
        return await counts_near(stub, 38.0133, -3.3706) == expected

    await eventually(counted, what="product counts on the map")


async def test_a_withdrawn_product_is_counted_no_more_whatever_order_its_events_come_in(
    stub: pb_grpc.GeoServiceAsyncStub, geo: RunningService
) -> None:
    await publish_products(geo, "a-ubeda", "p-1", "p-2", "p-3")

    async def counted(expected: int) -> bool:
        return (await counts_near(stub, 38.0133, -3.3706)).get("a-ubeda") == expected

    await eventually(lambda: counted(3), what="a-ubeda's three products counted")
    withdrawn = artisan_events_pb2.ProductWithdrawn(product_id="p-2", artisan_id="a-ubeda", revision=2)
    await publish_event(geo, withdrawn, "p-2", source="artisans")
    await eventually(lambda: counted(2), what="the withdrawn product counted no more")
    # p-4's withdrawal comes before its publication, which then changes nothing.
    early = artisan_events_pb2.ProductWithdrawn(product_id="p-4", artisan_id="a-ubeda", revision=3)
    await publish_event(geo, early, "p-4", source="artisans")
    await publish_products(geo, "a-ubeda", "p-4", "p-5")
    await eventually(lambda: counted(3), what="p-5 counted, p-4 never")
    # A count made before the last withdrawal (three products, one withdrawn: 2 on sale from four
    # changes), recorded late, does not undo it.
    await GeoIndex(geo.infra.redis, geo.infra.settings.prefix).count_products("a-ubeda", ProductCount(2, 4))
    assert await counted(3)


async def test_the_index_is_rebuilt_from_postgres_when_redis_lost_it(
    stub: pb_grpc.GeoServiceAsyncStub, geo: RunningService
) -> None:
    await publish_products(geo, "a-jaen", "p-1", "p-2", "p-3")

    async def counted() -> bool:
        return await counts_near(stub, 37.7796, -3.7849) == {"a-jaen": 3}

    await eventually(counted, what="a-jaen's products counted")
    keys = [k async for k in geo.infra.redis.scan_iter(f"{geo.infra.settings.prefix}:a4co:geo:*")]
    await geo.infra.redis.delete(*keys)
    assert await counts_near(stub, 37.7796, -3.7849) == {"a-jaen": 3}


async def test_nearby_workshops_are_found_in_postgres_while_redis_fails(
    stub: pb_grpc.GeoServiceAsyncStub, geo: RunningService, local_servers: LocalServers
) -> None:
    redis = stoppable(local_servers, "redis")
    await publish_products(geo, "a-ubeda", "p-1", "p-2")

    async def counted() -> bool:
        return (await counts_near(stub, 38.0133, -3.3706)).get("a-ubeda") == 2

    await eventually(counted, what="a-ubeda's products counted")
    searches = [
        pb.FindNearbyArtisansRequest(location=at(38.0133, -3.3706), radius_km=15),
        pb.FindNearbyArtisansRequest(location=at(38.0133, -3.3706), radius_km=100, craft="ceramica"),
        pb.FindNearbyArtisansRequest(location=at(37.9, -3.4), radius_km=200, page_size=2),
    ]

    def shown(found: pb.FindNearbyArtisansResponse) -> list[tuple[str, float, int, str]]:
        return [(a.artisan_id, round(a.distance_km, 1), a.product_count, a.locality) for a in found.artisans]

    from_redis = [shown(await stub.FindNearbyArtisans(s)) for s in searches]
    before = REGISTRY.get_sample_value("a4co_geo_nearby_from_postgres_total") or 0.0
    with stopped(redis):
        from_postgres = [shown(await stub.FindNearbyArtisans(s)) for s in searches]
    assert from_postgres == from_redis
    assert [len(found) for found in from_redis] == [3, 2, 2]
    assert REGISTRY.get_sample_value("a4co_geo_nearby_from_postgres_total") == before + len(searches)


async def test_delivery_quotes_by_zone(stub: pb_grpc.GeoServiceAsyncStub) -> None:
    local = await stub.QuoteDelivery(
        pb.QuoteDeliveryRequest(artisan_id="a-ubeda", destination=at(37.9938, -3.47))
    )
    assert (local.deliverable, local.zone, local.fee.amount_cents, local.fee.currency_code) == (
        True,
        "local",
        250,
        "EUR",
    )
    far = await stub.QuoteDelivery(
        pb.QuoteDeliveryRequest(artisan_id="a-ubeda", destination=at(37.7796, -3.7849))
    )
    assert (far.zone, far.fee.amount_cents, far.estimated_days) == ("provincia", 790, 3)
    madrid = await stub.QuoteDelivery(
        pb.QuoteDeliveryRequest(artisan_id="a-ubeda", destination=at(40.4168, -3.7038))
    )
    assert (madrid.deliverable, madrid.reason) == (False, "OUTSIDE_PROVINCE")


async def test_bad_input_and_unknown_artisans(stub: pb_grpc.GeoServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.FindNearbyArtisans(
            pb.FindNearbyArtisansRequest(location=at(95, 0), radius_km=0, page_size=500)
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in details_of(bad.value)[1]} == {"location.latitude", "radius_km", "page_size"}
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.QuoteDelivery(pb.QuoteDeliveryRequest(artisan_id="a-ubeda"))
    assert {f for f, _ in details_of(missing.value)[1]} == {"destination"}
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.QuoteDelivery(pb.QuoteDeliveryRequest(artisan_id="nobody", destination=at(38, -3.4)))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_moved_workshop_is_quoted_from_its_new_place(
    stub: pb_grpc.GeoServiceAsyncStub, geo: RunningService
) -> None:
    to_baeza = pb.QuoteDeliveryRequest(artisan_id="a-ubeda", destination=at(37.9938, -3.47))
    assert (await stub.QuoteDelivery(to_baeza)).zone == "local"
    moved = artisan_events_pb2.ArtisanOnboarded(
        artisan_id="a-ubeda", display_name="Alfarería Tito", craft="ceramica", locality="Jaén",
        location=at(37.7796, -3.7849),
    )  # fmt: skip
    await publish_event(geo, moved, "a-ubeda", source="artisans")

    async def quoted_from_jaen() -> bool:
        return (await stub.QuoteDelivery(to_baeza)).zone == "comarca"

    await eventually(quoted_from_jaen, what="the quote from the workshop's new place")
    assert await scalar_int(geo.infra.pool, "SELECT version FROM workshops WHERE artisan_id = 'a-ubeda'") == 2


# QuoteDelivery's locations in memory: read once, replaced by an announced move, never by an older
# version, and not used while the channel is not followed.
UBEDA, JAEN, BAEZA = Point(38.0133, -3.3706), Point(37.7796, -3.7849), Point(37.9938, -3.47)


async def behind_the_memory(geo: RunningService, artisan_id: str, where: Point) -> None:
    """Move a workshop in PostgreSQL without announcing it."""
    await geo.infra.pool.execute(
        "UPDATE workshops SET latitude = $2, longitude = $3 WHERE artisan_id = $1",
        artisan_id, where.latitude, where.longitude,
    )  # fmt: skip


def location_lookups() -> dict[str, float]:
    return {
        source: REGISTRY.get_sample_value("a4co_geo_location_lookups_total", {"source": source}) or 0.0
        for source in ("memory", "postgres")
    }


async def test_a_location_read_once_is_kept_in_memory(geo: RunningService) -> None:
    reader = GeoIndex(geo.infra.redis, geo.infra.settings.prefix, local_ttl_s=60)
    deps = handlers.Deps(pool=geo.infra.pool, index=reader)
    async with following(reader.locations):
        before = location_lookups()
        assert (await handlers.quote_delivery(deps, "a-ubeda", BAEZA)).zone == "local"
        await behind_the_memory(geo, "a-ubeda", JAEN)
        # Answered from memory: the change made behind it is not seen.
        assert (await handlers.quote_delivery(deps, "a-ubeda", BAEZA)).zone == "local"
        after = location_lookups()
        assert {k: after[k] - before[k] for k in after} == {"memory": 1, "postgres": 1}
    # Not following: every quote reads PostgreSQL.
    assert (await handlers.quote_delivery(deps, "a-ubeda", BAEZA)).zone == "comarca"


async def test_an_announced_move_replaces_a_location_in_memory(geo: RunningService) -> None:
    redis, prefix = geo.infra.redis, geo.infra.settings.prefix
    reader, writer = GeoIndex(redis, prefix, local_ttl_s=60), GeoIndex(redis, prefix)
    deps = handlers.Deps(pool=geo.infra.pool, index=reader)
    async with following(reader.locations):
        assert (await handlers.quote_delivery(deps, "a-ubeda", BAEZA)).zone == "local"
        await writer.add(
            Workshop("a-ubeda", "Alfarería Tito", "ceramica", "Jaén", JAEN), ProductCount(), version=5
        )

        async def moved() -> bool:
            return (await handlers.quote_delivery(deps, "a-ubeda", BAEZA)).zone == "comarca"

        await eventually(moved, what="the announced move in the reader's memory")
        # An older version announced late does not bring the old place back; the announcement
        # after it, of another workshop, shows that it has arrived.
        await writer.add(
            Workshop("a-ubeda", "Alfarería Tito", "ceramica", "Úbeda", UBEDA), ProductCount(), version=4
        )
        await writer.add(
            Workshop("a-baeza", "Aceites Baeza", "aceite", "Baeza", BAEZA), ProductCount(), version=9
        )
        await eventually(lambda: reader.locations.get("a-baeza") is not None, what="a-baeza announced")
        assert reader.locations.get("a-ubeda") == (5, JAEN)
        assert (await handlers.quote_delivery(deps, "a-ubeda", BAEZA)).zone == "comarca"


async def test_a_workshop_that_left_delivers_nowhere(
    stub: pb_grpc.GeoServiceAsyncStub, geo: RunningService
) -> None:
    to_baeza = pb.QuoteDeliveryRequest(artisan_id="a-ubeda", destination=at(37.9938, -3.47))
    assert (await stub.QuoteDelivery(to_baeza)).deliverable  # and remembered by this process
    left = artisan_events_pb2.ArtisanOffboarded(
        artisan_id="a-ubeda", display_name="Alfarería Tito", craft="ceramica", locality="Úbeda",
        location=at(38.0133, -3.3706), revision=2,
    )  # fmt: skip
    await publish_event(geo, left, "a-ubeda", source="artisans")

    async def refused() -> bool:
        return not (await stub.QuoteDelivery(to_baeza)).deliverable

    await eventually(refused, what="the quote of a workshop that left")
    answer = await stub.QuoteDelivery(to_baeza)
    assert (answer.reason, answer.fee.amount_cents, answer.zone) == ("ARTISAN_OFFBOARDED", 0, "")
    # Read from PostgreSQL as well, by a process that keeps no location.
    deps = handlers.Deps(pool=geo.infra.pool, index=GeoIndex(geo.infra.redis, geo.infra.settings.prefix))
    assert (await handlers.quote_delivery(deps, "a-ubeda", BAEZA)).reason == "ARTISAN_OFFBOARDED"


async def test_an_announced_departure_replaces_a_location_in_memory(geo: RunningService) -> None:
    redis, prefix = geo.infra.redis, geo.infra.settings.prefix
    reader, writer = GeoIndex(redis, prefix, local_ttl_s=60), GeoIndex(redis, prefix)
    deps = handlers.Deps(pool=geo.infra.pool, index=reader)
    tito = Workshop("a-ubeda", "Alfarería Tito", "ceramica", "Úbeda", UBEDA)
    async with following(reader.locations):
        assert (await handlers.quote_delivery(deps, "a-ubeda", BAEZA)).deliverable
        await writer.remove(tito, version=5)

        async def gone() -> bool:
            return (await handlers.quote_delivery(deps, "a-ubeda", BAEZA)).reason == "ARTISAN_OFFBOARDED"

        await eventually(gone, what="the announced departure in the reader's memory")
        # An older version announced late does not bring the workshop back.
        await writer.add(tito, ProductCount(), version=4)
        await writer.add(
            Workshop("a-baeza", "Aceites Baeza", "aceite", "Baeza", BAEZA), ProductCount(), version=9
        )
        await eventually(lambda: reader.locations.get("a-baeza") is not None, what="a-baeza announced")
        assert reader.locations.get("a-ubeda") == (5, None)
