"""geo's use cases and event handlers."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import asyncpg
from prometheus_client import Counter

from a4co.artisans.events.v1 import artisan_events_pb2 as artisan_events
from services.geo.adapters.geo_index import GeoIndex
from services.geo.adapters.postgres import Workshops
from services.geo.domain import (
    NO_PRODUCTS,
    Point,
    ProductCount,
    Quote,
    Workshop,
    haversine_km,
    quote,
)
from services.platform.errors import NotFoundError
from services.platform.events.consumer import HandlerContext
from services.platform.outages import REDIS_OUTAGES

log = logging.getLogger(__name__)

LOCATION_LOOKUPS = Counter(
    "a4co_geo_location_lookups",
    "Workshop locations looked up by QuoteDelivery, by where they came from (memory, postgres).",
    ["source"],
)
_FROM_MEMORY, _FROM_POSTGRES = (LOCATION_LOOKUPS.labels(source) for source in ("memory", "postgres"))
NEARBY_FROM_POSTGRES = Counter(
    "a4co_geo_nearby_from_postgres",
    "FindNearbyArtisans searches answered from PostgreSQL because Redis failed (decision 33).",
)


@dataclass(frozen=True, slots=True)
class Deps:
    """What the use cases are built with."""

    pool: asyncpg.Pool
    index: GeoIndex


async def find_nearby(
    deps: Deps, center: Point, radius_km: float, craft: str, limit: int
) -> list[tuple[Workshop, float, int]]:
    """Workshops within `radius_km` of `center`, nearest first, with their product counts: from
    the Redis map, or from PostgreSQL while Redis fails."""
    try:
        found = await deps.index.nearby(center, radius_km, craft, limit)
        # Only an empty answer can mean a lost index (a Redis restart): check then, not every call.
        if not found and not await deps.index.ready():
            await reindex(deps)
            found = await deps.index.nearby(center, radius_km, craft, limit)
    except REDIS_OUTAGES:  # the map is a copy (decision 33)
        NEARBY_FROM_POSTGRES.inc()
        return await nearby_from_postgres(deps, center, radius_km, craft, limit)
    return found


async def nearby_from_postgres(
    deps: Deps, center: Point, radius_km: float, craft: str, limit: int
) -> list[tuple[Workshop, float, int]]:
    """`find_nearby` answered from PostgreSQL: the workshops in the box around the circle, measured
    one by one (a province holds hundreds), with their products counted."""
    workshops = Workshops(deps.pool)
    measured = [
        (w, haversine_km(center, w.location)) for w in await workshops.in_box(center, radius_km, craft)
    ]
    near = sorted((pair for pair in measured if pair[1] <= radius_km), key=lambda pair: pair[1])[:limit]
    counts = await workshops.product_counts([w.artisan_id for w, _ in near]) if near else {}
    return [(w, km, counts.get(w.artisan_id, NO_PRODUCTS).on_sale) for w, km in near]


async def quote_delivery(deps: Deps, artisan_id: str, destination: Point) -> Quote:
    """The delivery of an artisan's order to `destination`, from the workshop's location in
    memory while this process follows their changes (from PostgreSQL otherwise); none from a
    workshop that left the marketplace (not deliverable, ARTISAN_OFFBOARDED)."""
    located = deps.index.locations.get(artisan_id)
    if located is not None:
        _FROM_MEMORY.inc()
    else:
        _FROM_POSTGRES.inc()
        located = await Workshops(deps.pool).location(artisan_id)
        if located is None:
            raise NotFoundError("ARTISAN_NOT_FOUND", f"geo knows no workshop of {artisan_id}")
        deps.index.locations.remember(artisan_id, located)
    return quote(located[1], destination)


async def reindex(deps: Deps) -> int:
    """Rebuild the Redis index from PostgreSQL, the source of truth; returns the workshops indexed."""
    workshops = Workshops(deps.pool)
    counts = await workshops.product_counts()
    everyone = await workshops.all()
    for workshop in everyone:
        await deps.index.add(workshop, counts.get(workshop.artisan_id, NO_PRODUCTS))
    log.info("geo index rebuilt with %d workshops", len(everyone))
    return len(everyone)


async def reindex_some(deps: Deps, artisan_ids: set[str]) -> None:
    """Index again from PostgreSQL the workshops whose indexing failed (`GeoIndex.stale`), and the
    product counts of artisans without a workshop yet."""
    workshops = Workshops(deps.pool)
    ids = sorted(artisan_ids)
    counts = await workshops.product_counts(ids)
    recorded = await workshops.versioned(ids)
    for workshop, version, offboarded in recorded:
        if offboarded:
            await deps.index.remove(workshop, version)
        else:
            await deps.index.add(workshop, counts.get(workshop.artisan_id, NO_PRODUCTS), version)
    for artisan_id in set(counts) - {w.artisan_id for w, _, _ in recorded}:
        await deps.index.count_products(artisan_id, counts[artisan_id])


async def on_artisan(
    deps: Deps, event: artisan_events.ArtisanOnboarded | artisan_events.ArtisanUpdated, ctx: HandlerContext
) -> None:
    """Record the new or changed workshop, and index it once recorded (moved, and under its craft)."""
    workshop = _workshop_of(event)
    revision = event.revision if isinstance(event, artisan_events.ArtisanUpdated) else 1
    version = await Workshops(ctx.conn).upsert(workshop, revision)
    if version is None:  # a newer revision is recorded, and was indexed
        return

    async def index() -> None:
        with contextlib.suppress(*REDIS_OUTAGES):  # marked stale: indexed again once Redis answers
            await deps.index.add(workshop, await _product_count(deps, workshop.artisan_id), version)

    ctx.after_commit(index)


async def on_artisan_offboarded(
    deps: Deps, event: artisan_events.ArtisanOffboarded, ctx: HandlerContext
) -> None:
    """A workshop that left the marketplace, recorded as its last revision and taken off the map
    once recorded; an older event of it arriving later changes nothing."""
    workshop = _workshop_of(event)
    version = await Workshops(ctx.conn).upsert(workshop, event.revision, offboarded=True)
    if version is None:
        return  # recorded already, and taken off

    async def unindex() -> None:
        with contextlib.suppress(*REDIS_OUTAGES):  # marked stale: taken off once Redis answers
            await deps.index.remove(workshop, version)

    ctx.after_commit(unindex)


def _workshop_of(
    event: artisan_events.ArtisanOnboarded | artisan_events.ArtisanUpdated | artisan_events.ArtisanOffboarded,
) -> Workshop:
    return Workshop(
        event.artisan_id,
        event.display_name,
        event.craft,
        event.locality,
        Point(event.location.latitude, event.location.longitude),
    )


async def on_product_published(
    deps: Deps, event: artisan_events.ProductPublished, ctx: HandlerContext
) -> None:
    """A workshop's product, counted on the map once recorded."""
    await ctx.conn.execute(
        "INSERT INTO products (product_id, artisan_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        event.product_id,
        event.artisan_id,
    )
    ctx.after_commit(lambda: _count(deps, event.artisan_id))


async def on_product_withdrawn(
    deps: Deps, event: artisan_events.ProductWithdrawn, ctx: HandlerContext
) -> None:
    """A workshop's product off sale: counted no more (recorded even before its publication)."""
    await ctx.conn.execute(
        "INSERT INTO products (product_id, artisan_id, withdrawn) VALUES ($1, $2, true)"
        " ON CONFLICT (product_id) DO UPDATE SET withdrawn = true",
        event.product_id,
        event.artisan_id,
    )
    ctx.after_commit(lambda: _count(deps, event.artisan_id))


async def _count(deps: Deps, artisan_id: str) -> None:
    with contextlib.suppress(*REDIS_OUTAGES):  # marked stale: counted again once Redis answers
        await deps.index.count_products(artisan_id, await _product_count(deps, artisan_id))


async def _product_count(deps: Deps, artisan_id: str) -> ProductCount:
    """An artisan's products, counted after the commit: whichever of two concurrent handlers
    counts last sees both products (counting inside each transaction, both could miss the other's)."""
    return (await Workshops(deps.pool).product_counts([artisan_id])).get(artisan_id, NO_PRODUCTS)
