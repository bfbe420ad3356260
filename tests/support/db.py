"""Small database reads for assertions."""

from __future__ import annotations

import asyncpg


async def scalar_int(pool: asyncpg.Pool, sql: str, *args: object) -> int:
    """The single integer a query returns (a count, usually)."""
    return int(await pool.fetchval(sql, *args))
