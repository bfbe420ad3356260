"""The Redis geo index of workshops (GEOSEARCH), rebuilt from PostgreSQL when missing, and the
workshops' locations kept in memory while their moves are announced (QuoteDelivery's)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from services.geo.domain import Located, Point, ProductCount, Workshop
from services.platform.announced import AnnouncedMemory
from services.platform.coalesce import Coalescer
from services.platform.outages import run_script
from services.platform.stale import StaleKeys

# The search and each workshop's details in one round trip (a GEOSEARCH, then a pipeline of
# HGETALLs, was a third of FindNearbyArtisans' CPU, most of it redis-py's per-command work; the
# product counts, read from PostgreSQL on each call, another tenth).
# Distances and coordinates stay Redis strings, so Lua does not round them to integers. The details
# keys are derived in the script: fine on one Redis server, not on a cluster. The searches of the
# calls waiting together go in one pipeline (decision 28), each an EVAL of the script's text: Redis
# runs its compiled copy, found by the text's digest, where EVALSHA in a pipeline would cost
# redis-py a SCRIPT EXISTS round trip before each.
_NEARBY = """
local found = redis.call('GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[1], ARGV[2], 'BYRADIUS', ARGV[3], 'km',
  'ASC', 'COUNT', ARGV[4], 'WITHDIST', 'WITHCOORD')
local rows = {}
for i, item in ipairs(found) do
  local info = redis.call('HMGET', ARGV[5] .. item[1], 'display_name', 'craft', 'locality', 'product_count')
  rows[i] = {item[1], item[2], item[3][1], item[3][2], info[1], info[2], info[3], info[4]}
end
return rows
"""


_COUNT_IF_NEWER = """
if tonumber(redis.call('HGET', KEYS[1], 'product_changes') or '-1') < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'product_count', ARGV[1], 'product_changes', ARGV[2])
end
"""


# A search for workshops: craft ('' for any), longitude, latitude, radius in km, most results.
NearbySearch = tuple[str, float, float, float, int]


# What a workshop's announcement says instead of a place once it left the marketplace.
_LEFT = "left"


def parse_announcement(message: str) -> tuple[str, Located]:
    """ "<artisan id> <version> <latitude> <longitude>" as announced when a workshop is indexed, or
    "<artisan id> <version> left" when it is taken off the map for good."""
    if message.endswith(f" {_LEFT}"):
        artisan_id, version, _ = message.rsplit(" ", 2)
        return artisan_id, (int(version), None)
    artisan_id, version, latitude, longitude = message.rsplit(" ", 3)
    return artisan_id, (int(version), Point(float(latitude), float(longitude)))


class GeoIndex:
    """Workshop positions in a Redis geo set, one set in all and one per craft.

    Each recorded change of a workshop is also announced, in the same Redis transaction that
    indexes it, to every geo process that follows the channel: `locations` keeps what it read
    from PostgreSQL, a newer version replacing an older one (services/platform/announced.py).
    """

    # A workshop moves rarely and every move is announced: a location is read again after a minute
    # only in case an announcement was lost without the subscription failing.
    def __init__(self, redis: Redis, prefix: str = "", *, local_ttl_s: float = 60.0) -> None:
        self._redis = redis
        self._base = f"{prefix + ':' if prefix else ''}a4co:geo"
        self._searches: Coalescer[NearbySearch, list[Any]] = Coalescer("geo_nearby", self._search)
        self._count = redis.register_script(_COUNT_IF_NEWER)
        self.locations = AnnouncedMemory.versioned(
            redis, f"{self._base}:workshop-changed", parse_announcement, ttl_s=local_ttl_s
        )
        # Workshops whose indexing failed after its commit: indexed again (`handlers.reindex_some`).
        self.stale = StaleKeys("workshop")

    def _set(self, craft: str = "") -> str:
        return f"{self._base}:workshops" + (f":{craft}" if craft else "")

    def _details(self, artisan_id: str) -> str:
        return f"{self._base}:workshop:{artisan_id}"

    async def add(self, w: Workshop, product_count: ProductCount, version: int | None = None) -> None:
        """Index a workshop (or move it) with its number of products; a `version` (that of the
        change just recorded) is announced with its location. If Redis fails, the workshop is
        marked `stale`, to be indexed again from PostgreSQL."""
        try:
            await self._add(w, product_count, version)
        except BaseException:
            self.stale.mark([w.artisan_id])
            raise

    async def _indexed_craft(self, artisan_id: str) -> str:
        """The craft a workshop was last indexed under ('' if none)."""
        was: bytes | str | None = await self._redis.hget(self._details(artisan_id), "craft")
        return (was.decode() if isinstance(was, bytes) else was) or ""

    async def _add(self, w: Workshop, product_count: ProductCount, version: int | None) -> None:
        was = await self._indexed_craft(w.artisan_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            if was and was != w.craft:  # a workshop that changed craft leaves the set of its old one
                pipe.zrem(self._set(was), w.artisan_id)
            for key in (self._set(), self._set(w.craft)):
                pipe.geoadd(key, (w.location.longitude, w.location.latitude, w.artisan_id))
            pipe.hset(
                self._details(w.artisan_id),
                mapping={"display_name": w.display_name, "craft": w.craft, "locality": w.locality},
            )
            if version is not None:
                where = f"{w.location.latitude!r} {w.location.longitude!r}"
                pipe.publish(self.locations.channel, f"{w.artisan_id} {version} {where}")
            await pipe.execute()
        if version is not None:
            # This process knows its own change at once, whatever the channel's delay.
            self.locations.remember(w.artisan_id, (version, w.location))
        await self.count_products(w.artisan_id, product_count)

    async def remove(self, w: Workshop, version: int | None = None) -> None:
        """Take a workshop that left off the map (out of the set of every craft it was indexed
        under); a `version` (that of its departure, recorded) is announced, so that the processes
        that keep its location forget it. If Redis fails, the workshop is marked `stale`, to be
        taken off again from PostgreSQL."""
        try:
            was = await self._indexed_craft(w.artisan_id)
            async with self._redis.pipeline(transaction=True) as pipe:
                for craft in {"", w.craft, was}:
                    pipe.zrem(self._set(craft), w.artisan_id)
                if version is not None:
                    pipe.publish(self.locations.channel, f"{w.artisan_id} {version} {_LEFT}")
                await pipe.execute()
        except BaseException:
            self.stale.mark([w.artisan_id])
            raise
        if version is not None:
            self.locations.remember(w.artisan_id, (version, None))

    async def count_products(self, artisan_id: str, product_count: ProductCount) -> None:
        """Record a workshop's number of products on sale, unless one counted from more changes is
        recorded (so two counts applied out of order keep the newer). If Redis fails, the workshop
        is marked `stale`."""
        try:
            await run_script(self._count, [self._details(artisan_id)], list(product_count))
        except BaseException:
            self.stale.mark([artisan_id])
            raise

    async def ready(self) -> bool:
        """Whether the index exists (it may have been lost with a Redis restart)."""
        return bool(await self._redis.exists(self._set()))

    async def _search(self, searches: list[NearbySearch]) -> dict[NearbySearch, list[Any]]:
        """Distinct searches, in one pipeline."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for craft, longitude, latitude, radius_km, limit in searches:
                pipe.eval(
                    _NEARBY, 1, self._set(craft), longitude, latitude, radius_km, limit, self._details("")
                )
            found = await pipe.execute()
        return dict(zip(searches, found, strict=True))

    async def nearby(
        self, center: Point, radius_km: float, craft: str, limit: int
    ) -> list[tuple[Workshop, float, int]]:
        """Workshops within the radius, nearest first, with their distance in kilometres and their
        number of products."""
        search = (craft, center.longitude, center.latitude, radius_km, limit)
        rows = (await self._searches.get([search]))[search]
        result = []
        for member, distance, lng, lat, name, workshop_craft, locality, count in rows:
            workshop = Workshop(
                member, name or "", workshop_craft or "", locality or "", Point(float(lat), float(lng))
            )
            result.append((workshop, float(distance), int(count or 0)))
        return result
