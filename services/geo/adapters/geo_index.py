"""The Redis geo index of workshops (GEOSEARCH), rebuilt from PostgreSQL when missing."""

from __future__ import annotations

from typing import cast

from redis.asyncio import Redis

from services.geo.domain import Point, Workshop


class GeoIndex:
    """Workshop positions in a Redis geo set, one set in all and one per craft."""

    def __init__(self, redis: Redis, prefix: str = "") -> None:
        self._redis = redis
        self._base = f"{prefix + ':' if prefix else ''}a4co:geo"

    def _set(self, craft: str = "") -> str:
        return f"{self._base}:workshops" + (f":{craft}" if craft else "")

    def _details(self, artisan_id: str) -> str:
        return f"{self._base}:workshop:{artisan_id}"

    async def add(self, w: Workshop) -> None:
        """Index a workshop (or move it)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in (self._set(), self._set(w.craft)):
                pipe.geoadd(key, (w.location.longitude, w.location.latitude, w.artisan_id))
            pipe.hset(
                self._details(w.artisan_id),
                mapping={"display_name": w.display_name, "craft": w.craft, "locality": w.locality},
            )
            await pipe.execute()

    async def ready(self) -> bool:
        """Whether the index exists (it may have been lost with a Redis restart)."""
        return bool(await self._redis.exists(self._set()))

    async def nearby(
        self, center: Point, radius_km: float, craft: str, limit: int
    ) -> list[tuple[Workshop, float]]:
        """Workshops within the radius, nearest first, with their distance in kilometres."""
        raw = await self._redis.geosearch(
            self._set(craft),
            longitude=center.longitude,
            latitude=center.latitude,
            radius=radius_km,
            unit="km",
            sort="ASC",
            count=limit,
            withdist=True,
            withcoord=True,
        )
        found = cast(list[tuple[str, float, tuple[float, float]]], raw)
        if not found:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for member, _, _ in found:
                pipe.hgetall(self._details(member))
            details = await pipe.execute()
        result = []
        for (member, distance, (lng, lat)), info in zip(found, details, strict=True):
            workshop = Workshop(
                member,
                info.get("display_name", ""),
                info.get("craft", ""),
                info.get("locality", ""),
                Point(lat, lng),
            )
            result.append((workshop, float(distance)))
        return result
