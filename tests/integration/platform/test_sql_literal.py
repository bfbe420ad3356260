"""`literal`: text written into a statement sent without parameters reads back as it was."""

from __future__ import annotations

import asyncpg
import pytest

from services.platform.db import literal

AWKWARD = [
    "",
    "plain",
    "it's",
    "''",
    "'); DROP TABLE inbox; --",
    "back\\slash\\'",
    "$$dollar$$ $tag$",
    "línea\nnueva\ttab",
    "aceite de Úbeda ✓ 🫒",
    "E'\\x41'",
]


@pytest.mark.parametrize("text", AWKWARD)
async def test_a_literal_reads_back_as_the_text(admin_db: asyncpg.Connection, text: str) -> None:
    # Through the simple query protocol, as the consumer sends it, with the setting pools make.
    await admin_db.execute("SET standard_conforming_strings = on")
    await admin_db.execute(f"CREATE TEMP TABLE said AS SELECT {literal(text)}::text AS text")
    try:
        assert await admin_db.fetchval("SELECT text FROM said") == text
    finally:
        await admin_db.execute("DROP TABLE said")


def test_nul_is_refused() -> None:
    with pytest.raises(ValueError, match="NUL"):
        literal("a\x00b")
