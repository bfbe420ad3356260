"""A workshop's events reaching catalog, geo and cms in any order: each keeps the newest revision."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest_asyncio

from a4co.artisans.events.v1 import artisan_events_pb2 as events
from a4co.cms.v1 import cms_service_pb2 as cms_pb
from a4co.cms.v1 import cms_service_pb2_grpc as cms_grpc
from a4co.geo.v1 import geo_service_pb2 as geo_pb
from a4co.geo.v1 import geo_service_pb2_grpc as geo_grpc
from a4co.identity.events.v1 import identity_events_pb2 as identity
from a4co.type.v1 import lat_lng_pb2
from services.cms.__main__ import build as build_cms
from services.platform.local_servers import ServerUrls
from services.platform.timestamps import to_timestamp
from tests.integration.services.conftest import BUILDS
from tests.integration.services.harness import (
    Keys,
    RunningService,
    publish_event,
    running_services,
)
from tests.support.waiting import eventually

UBEDA = lat_lng_pb2.LatLng(latitude=38.0133, longitude=-3.3706)
JAEN = lat_lng_pb2.LatLng(latitude=37.7796, longitude=-3.7849)
BAEZA = lat_lng_pb2.LatLng(latitude=37.9938, longitude=-3.4700)


@pytest_asyncio.fixture
async def followers(urls: ServerUrls, prefix: str, keys: Keys) -> AsyncIterator[dict[str, RunningService]]:
    builds = {"catalog": BUILDS["catalog"], "geo": BUILDS["geo"], "cms": build_cms}
    async with running_services(builds, urls, prefix, keys) as running:
        yield running


def updated(
    artisan_id: str, revision: int, name: str, where: lat_lng_pb2.LatLng, town: str
) -> events.ArtisanUpdated:
    return events.ArtisanUpdated(
        artisan_id=artisan_id, display_name=name, craft="ceramica", locality=town, location=where,
        bio=f"Revisión {revision}.", revision=revision, changed_fields=["display_name"],
    )  # fmt: skip


async def test_a_workshop_event_older_than_the_one_applied_changes_nothing_anywhere(
    followers: dict[str, RunningService],
) -> None:
    catalog, geo, cms = followers["catalog"], followers["geo"], followers["cms"]
    onboarded = events.ArtisanOnboarded(
        artisan_id="tito", display_name="Original", craft="ceramica", locality="Úbeda", location=UBEDA,
        bio="Revisión 1.", onboard_time=to_timestamp(None),
    )  # fmt: skip
    onboarded.onboard_time.FromSeconds(1_767_225_600)  # 2026-01-01
    # The newest first, then the older ones late (a redelivery): each follower keeps revision 3.
    for event in (
        updated("tito", 3, "Alfarería Tito e Hijos", BAEZA, "Baeza"),
        updated("tito", 2, "Alfarería Tito", JAEN, "Jaén"),
        onboarded,
    ):
        await publish_event(catalog, event, "tito")
    # The person's own profile changes too: an artisan's page shows the workshop.
    await publish_event(
        catalog, identity.ProfileUpdated(user_id="tito", display_name="Tito", bio="Yo."), "tito"
    )
    # A last event, applied after the others by every follower (each reads the stream in order).
    await publish_event(catalog, updated("marca", 1, "Marca", UBEDA, "Úbeda"), "marca")

    geo_stub = geo_grpc.GeoServiceStub(geo.channel)
    cms_stub = cms_grpc.CmsServiceStub(cms.channel)

    async def profile(user_id: str) -> cms_pb.PublicProfile | None:
        try:
            return (await cms_stub.GetPublicProfile(cms_pb.GetPublicProfileRequest(user_id=user_id))).profile
        except grpc.aio.AioRpcError:
            return None

    async def all_applied() -> bool:
        in_catalog = await catalog.infra.pool.fetchval(
            "SELECT count(*) FROM artisans WHERE artisan_id = 'marca'"
        )
        in_geo = await geo.infra.pool.fetchval("SELECT count(*) FROM workshops WHERE artisan_id = 'marca'")
        return bool(in_catalog and in_geo and await profile("marca") is not None)

    await eventually(all_applied, timeout=20, what="every event applied by every follower")
    row = await catalog.infra.pool.fetchrow("SELECT * FROM artisans WHERE artisan_id = 'tito'")
    assert row is not None
    assert (row["display_name"], row["locality"], row["latitude"], row["revision"]) == (
        "Alfarería Tito e Hijos",
        "Baeza",
        BAEZA.latitude,
        3,
    )
    row = await geo.infra.pool.fetchrow("SELECT * FROM workshops WHERE artisan_id = 'tito'")
    assert row is not None
    assert (row["display_name"], row["latitude"], row["revision"]) == (
        "Alfarería Tito e Hijos",
        BAEZA.latitude,
        3,
    )
    near = await geo_stub.FindNearbyArtisans(geo_pb.FindNearbyArtisansRequest(location=BAEZA, radius_km=1))
    assert [(a.artisan_id, a.display_name) for a in near.artisans] == [("tito", "Alfarería Tito e Hijos")]
    where_it_was = await geo_stub.FindNearbyArtisans(
        geo_pb.FindNearbyArtisansRequest(location=JAEN, radius_km=1)
    )
    assert not where_it_was.artisans
    page = await profile("tito")
    assert page is not None
    assert (page.display_name, page.bio, page.locality, page.kind) == (
        "Alfarería Tito e Hijos",
        "Revisión 3.",
        "Baeza",
        cms_pb.PROFILE_KIND_ARTISAN,
    )
    assert page.member_since.seconds == 1_767_225_600, "since its onboarding, which arrived last"


async def test_a_workshop_that_left_stays_gone_whatever_event_of_it_arrives_after(
    followers: dict[str, RunningService],
) -> None:
    catalog, geo, cms = followers["catalog"], followers["geo"], followers["cms"]
    left = events.ArtisanOffboarded(
        artisan_id="tito", display_name="Alfarería Tito e Hijos", craft="ceramica", locality="Baeza",
        location=BAEZA, bio="Revisión 3.", revision=3, withdrawn_products=2,
    )  # fmt: skip
    left.offboard_time.FromSeconds(1_780_000_000)
    onboarded = events.ArtisanOnboarded(
        artisan_id="tito", display_name="Original", craft="ceramica", locality="Úbeda", location=UBEDA,
        bio="Revisión 1.",
    )  # fmt: skip
    onboarded.onboard_time.FromSeconds(1_767_225_600)
    # Its leaving first, then the older events late (a redelivery): none puts it back on the map.
    for event in (left, updated("tito", 2, "Alfarería Tito", JAEN, "Jaén"), onboarded):
        await publish_event(catalog, event, "tito")
    await publish_event(catalog, updated("marca", 1, "Marca", BAEZA, "Baeza"), "marca")
    geo_stub = geo_grpc.GeoServiceStub(geo.channel)
    cms_stub = cms_grpc.CmsServiceStub(cms.channel)

    async def all_applied() -> bool:
        near = await geo_stub.FindNearbyArtisans(
            geo_pb.FindNearbyArtisansRequest(location=BAEZA, radius_km=1)
        )
        try:
            await cms_stub.GetPublicProfile(cms_pb.GetPublicProfileRequest(user_id="marca"))
        except grpc.aio.AioRpcError:
            return False
        return [a.artisan_id for a in near.artisans] == ["marca"]

    await eventually(all_applied, timeout=20, what="every event applied by geo and cms")
    for where in (UBEDA, JAEN, BAEZA):
        near = await geo_stub.FindNearbyArtisans(
            geo_pb.FindNearbyArtisansRequest(location=where, radius_km=1)
        )
        assert "tito" not in [a.artisan_id for a in near.artisans]
    assert await geo.infra.pool.fetchval("SELECT offboarded FROM workshops WHERE artisan_id = 'tito'")
    # The map rebuilt from PostgreSQL (Redis lost it) leaves it out too.
    lost = [k async for k in geo.infra.redis.scan_iter(f"{geo.infra.settings.prefix}:a4co:geo:*")]
    await geo.infra.redis.delete(*lost)
    rebuilt = await geo_stub.FindNearbyArtisans(geo_pb.FindNearbyArtisansRequest(location=BAEZA, radius_km=1))
    assert [a.artisan_id for a in rebuilt.artisans] == ["marca"]
    page = (await cms_stub.GetPublicProfile(cms_pb.GetPublicProfileRequest(user_id="tito"))).profile
    assert (page.display_name, page.locality, page.offboard_time.seconds) == (
        "Alfarería Tito e Hijos",
        "Baeza",
        1_780_000_000,
    )
    assert page.member_since.seconds == 1_767_225_600, "since its onboarding, which arrived last"
    still = (await cms_stub.GetPublicProfile(cms_pb.GetPublicProfileRequest(user_id="marca"))).profile
    assert not still.HasField("offboard_time"), "a workshop that sells"
