"""Redis holds copies of what PostgreSQL holds (inventory's stock levels, geo's map of workshops).
A change committed while Redis fails reaches its copy once Redis answers again, even when Redis
comes back with the copy as it was before the change; meanwhile inventory answers from
PostgreSQL (services/platform/stale.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from a4co.artisans.events.v1 import artisan_events_pb2
from a4co.geo.v1 import geo_service_pb2 as geo_pb
from a4co.geo.v1 import geo_service_pb2_grpc as geo_grpc
from a4co.inventory.v1 import inventory_service_pb2 as pb
from a4co.inventory.v1 import inventory_service_pb2_grpc as pb_grpc
from a4co.orders.events.v1 import order_events_pb2
from a4co.type.v1 import lat_lng_pb2
from services.geo.__main__ import build as build_geo
from services.inventory.__main__ import build as build_inventory
from services.inventory.adapters.cache import StockCache
from services.platform.local_servers import LocalServers, ServerUrls
from tests.integration.services.harness import Keys, publish_event, running_service, settings_for
from tests.support.db import scalar_int
from tests.support.servers import REDIS_FAILURES, redis_failing
from tests.support.waiting import eventually

ARTISAN = "artisan-ubeda"


@pytest.mark.parametrize("how", REDIS_FAILURES)
async def test_stock_reserved_while_redis_fails_is_checked_from_postgres_then_cached_again(
    urls: ServerUrls, prefix: str, keys: Keys, local_servers: LocalServers, redis: Redis, how: str
) -> None:
    settings = settings_for("inventory", urls, prefix, keys)
    async with running_service(
        "inventory", build_inventory, Path("services/inventory/schema.sql"), settings
    ) as svc:
        stub = pb_grpc.InventoryServiceStub(svc.channel)
        published = artisan_events_pb2.ProductPublished(
            product_id="p-cuenco", artisan_id=ARTISAN, name="Cuenco", initial_stock=4
        )
        await publish_event(svc, published, "p-cuenco", source="artisans")
        other = artisan_events_pb2.ProductPublished(
            product_id="p-jarra", artisan_id=ARTISAN, name="Jarra", initial_stock=2
        )
        await publish_event(svc, other, "p-jarra", source="artisans")
        check = pb.CheckStockRequest(lines=[pb.StockRequestLine(product_id="p-cuenco", quantity=1)])

        async def cached_in_redis(available: int) -> bool:
            reader = StockCache(svc.infra.redis, prefix)  # its own memory is empty: Redis answers
            return await reader.available(["p-cuenco"]) == {"p-cuenco": available}

        await eventually(lambda: cached_in_redis(4), what="the initial stock cached")
        async with redis_failing(how, local_servers, redis):
            paid = order_events_pb2.OrderStatusChanged(
                order_id="o-1",
                customer_id="c-1",
                artisan_id=ARTISAN,
                previous_status=order_events_pb2.ORDER_STATUS_PENDING,
                status=order_events_pb2.ORDER_STATUS_PAID,
                lines=[order_events_pb2.OrderLine(product_id="p-cuenco", quantity=3)],
            )
            await publish_event(svc, paid, "o-1", source="orders")

            async def reserved() -> bool:
                held = "SELECT reserved FROM stock WHERE product_id = 'p-cuenco'"
                return await scalar_int(svc.infra.pool, held) == 3

            await eventually(reserved, what="3 reserved; only the cache's write failed")
            assert (await stub.CheckStock(check)).lines[0].available == 1, "from PostgreSQL"
            # A product this process has not looked up: stopped, Redis fails under the check and
            # PostgreSQL answers instead; refusing writes, Redis answers with its copy.
            jarra = pb.CheckStockRequest(lines=[pb.StockRequestLine(product_id="p-jarra", quantity=2)])
            line = (await stub.CheckStock(jarra)).lines[0]
            assert (line.available, line.known, line.ok) == (2, True, True)
        # Redis takes writes again, still holding 4: the stale copy is written again.
        await eventually(lambda: cached_in_redis(1), timeout=20, what="the new stock cached again")
        assert (await stub.CheckStock(check)).lines[0].available == 1


@pytest.mark.parametrize("how", REDIS_FAILURES)
async def test_a_workshop_onboarded_or_offboarded_while_redis_fails_is_put_on_or_taken_off_the_map(
    urls: ServerUrls,
    prefix: str,
    keys: Keys,
    local_servers: LocalServers,
    redis: Redis,
    how: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Once Redis answers again. The failed indexing is expected, not an error: it is logged as
    none."""
    settings = settings_for("geo", urls, prefix, keys)
    async with running_service("geo", build_geo, Path("services/geo/schema.sql"), settings) as svc:
        stub = geo_grpc.GeoServiceStub(svc.channel)
        everywhere = geo_pb.FindNearbyArtisansRequest(
            location=lat_lng_pb2.LatLng(latitude=38.0, longitude=-3.4), radius_km=100
        )

        async def onboard(artisan_id: str, lat: float, lng: float) -> None:
            event = artisan_events_pb2.ArtisanOnboarded(
                artisan_id=artisan_id,
                display_name=artisan_id,
                craft="ceramica",
                locality="Úbeda",
                location=lat_lng_pb2.LatLng(latitude=lat, longitude=lng),
            )
            await publish_event(svc, event, artisan_id, source="artisans")

        async def on_the_map() -> list[str]:
            return sorted(a.artisan_id for a in (await stub.FindNearbyArtisans(everywhere)).artisans)

        async def recorded(n: int) -> bool:
            return await scalar_int(svc.infra.pool, "SELECT count(*) FROM workshops") == n

        await onboard("a-tito", 38.0133, -3.3706)
        await eventually(lambda: _equals(on_the_map(), ["a-tito"]), what="the first workshop on the map")
        async with redis_failing(how, local_servers, redis):
            await onboard("a-paco", 38.0150, -3.3690)
            await eventually(lambda: recorded(2), what="the second workshop recorded")
            await eventually(lambda: stale("workshop") == 1, what="its indexing failed, and marked it")
        await eventually(
            lambda: _equals(on_the_map(), ["a-paco", "a-tito"]),
            timeout=20,
            what="the second workshop on the map",
        )
        # Stopped, Redis comes back with the workshop on the map, as it was when it stopped.
        async with redis_failing(how, local_servers, redis):
            left = artisan_events_pb2.ArtisanOffboarded(
                artisan_id="a-tito", display_name="a-tito", craft="ceramica", locality="Úbeda",
                location=lat_lng_pb2.LatLng(latitude=38.0133, longitude=-3.3706), revision=2,
            )  # fmt: skip
            await publish_event(svc, left, "a-tito", source="artisans")

            async def offboarded() -> bool:
                query = "SELECT count(*) FROM workshops WHERE offboarded"
                return await scalar_int(svc.infra.pool, query) == 1

            await eventually(offboarded, what="the workshop's leaving recorded")
            if how == "stopped":  # answered from PostgreSQL meanwhile (decision 33), without it
                assert await on_the_map() == ["a-paco"]
            await eventually(lambda: stale("workshop") == 1, what="its removal failed, and marked it")
        await eventually(
            lambda: _equals(on_the_map(), ["a-paco"]), timeout=20, what="the workshop that left off the map"
        )
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def stale(copy: str) -> float | None:
    """The service's `a4co_redis_copies_stale` for `copy` (one service runs at a time here)."""
    return REGISTRY.get_sample_value("a4co_redis_copies_stale", {"copy": copy})


async def _equals(value: object, expected: object) -> bool:
    return await value == expected  # type: ignore[misc,no-any-return]
