"""geo's table through asyncpg."""

from __future__ import annotations

import asyncpg

from services.geo.domain import Point, Workshop
from services.platform.db import Connection


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

    def __init__(self, conn: Connection | asyncpg.Pool) -> None:
        self.conn = conn

    async def upsert(self, w: Workshop) -> None:
        """Record or move a workshop."""
        await self.conn.execute(
            "INSERT INTO workshops (artisan_id, display_name, craft, locality, latitude, longitude)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (artisan_id) DO UPDATE SET"
            " display_name = EXCLUDED.display_name, craft = EXCLUDED.craft, locality = EXCLUDED.locality,"
            " latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude, updated_at = now()",
            w.artisan_id,
            w.display_name,
            w.craft,
            w.locality,
            w.location.latitude,
            w.location.longitude,
        )

    async def get(self, artisan_id: str) -> Workshop | None:
        """One workshop."""
        row = await self.conn.fetchrow("SELECT * FROM workshops WHERE artisan_id = $1", artisan_id)
        return _workshop(row) if row else None

    async def all(self) -> list[Workshop]:
        """Every workshop, to rebuild the index."""
        return [_workshop(r) for r in await self.conn.fetch("SELECT * FROM workshops")]
