"""geo's table through asyncpg."""

from __future__ import annotations

import math

import asyncpg

from services.geo.domain import Located, Point, ProductCount, Workshop
from services.platform.db import Queryable

KM_PER_DEGREE = 111.0  # of latitude, a little less than its shortest (110.57), so the box covers the circle


def _workshop(row: asyncpg.Record) -> Workshop:
    return Workshop(
        row["artisan_id"],
        row["display_name"],
        row["craft"],
        row["locality"],
        Point(row["latitude"], row["longitude"]),
    )


class Workshops:
    """Workshops in the `workshops` table."""

    def __init__(self, conn: Queryable) -> None:
        self.conn = conn

    async def upsert(self, w: Workshop, revision: int = 1, *, offboarded: bool = False) -> int | None:
        """Record or move a workshop as the artisans service's `revision` of it (`offboarded`: the
        last, as it left the marketplace); its version now, or None when a newer revision is
        recorded (its events may arrive in any order)."""
        version: int | None = await self.conn.fetchval(
            "INSERT INTO workshops (artisan_id, display_name, craft, locality, latitude, longitude, revision,"
            " offboarded) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (artisan_id) DO UPDATE SET"
            " display_name = EXCLUDED.display_name, craft = EXCLUDED.craft, locality = EXCLUDED.locality,"
            " latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude, updated_at = now(),"
            " version = workshops.version + 1, revision = EXCLUDED.revision, offboarded = EXCLUDED.offboarded"
            " WHERE workshops.revision <= EXCLUDED.revision RETURNING version",
            w.artisan_id,
            w.display_name,
            w.craft,
            w.locality,
            w.location.latitude,
            w.location.longitude,
            revision,
            offboarded,
        )
        return version

    async def location(self, artisan_id: str) -> Located | None:
        """Where a workshop is (None once it left the marketplace), with the version of its row."""
        row = await self.conn.fetchrow(
            "SELECT version, latitude, longitude, offboarded FROM workshops WHERE artisan_id = $1", artisan_id
        )
        if row is None:
            return None
        return row["version"], None if row["offboarded"] else Point(row["latitude"], row["longitude"])

    async def versioned(self, artisan_ids: list[str]) -> list[tuple[Workshop, int, bool]]:
        """The workshops of `artisan_ids` that are recorded, each with the version of its row and
        whether it left the marketplace."""
        rows = await self.conn.fetch(
            "SELECT * FROM workshops WHERE artisan_id = ANY($1::text[])", artisan_ids
        )
        return [(_workshop(r), int(r["version"]), r["offboarded"]) for r in rows]

    async def in_box(self, center: Point, radius_km: float, craft: str) -> list[Workshop]:
        """The workshops (of `craft`, unless empty) in the box of latitudes and longitudes around a
        circle of `radius_km` about `center`: those in the circle, and some of its corners."""
        dlat = radius_km / KM_PER_DEGREE
        dlng = radius_km / (KM_PER_DEGREE * max(math.cos(math.radians(center.latitude)), 0.01))
        rows = await self.conn.fetch(
            "SELECT * FROM workshops WHERE latitude BETWEEN $1 AND $2 AND longitude BETWEEN $3 AND $4"
            " AND ($5 = '' OR craft = $5) AND NOT offboarded",
            center.latitude - dlat,
            center.latitude + dlat,
            center.longitude - dlng,
            center.longitude + dlng,
            craft,
        )
        return [_workshop(r) for r in rows]

    async def all(self) -> list[Workshop]:
        """Every workshop on the map, to rebuild the index."""
        return [_workshop(r) for r in await self.conn.fetch("SELECT * FROM workshops WHERE NOT offboarded")]

    async def product_counts(self, artisan_ids: list[str] | None = None) -> dict[str, ProductCount]:
        """Products on sale of each artisan (every artisan with products when `artisan_ids` is None)."""
        rows = await self.conn.fetch(
            "SELECT artisan_id, count(*) FILTER (WHERE NOT withdrawn) AS on_sale,"
            " count(*) + count(*) FILTER (WHERE withdrawn) AS changes FROM products"
            " WHERE $1::text[] IS NULL OR artisan_id = ANY($1::text[]) GROUP BY artisan_id",
            artisan_ids,
        )
        return {r["artisan_id"]: ProductCount(int(r["on_sale"]), int(r["changes"])) for r in rows}
