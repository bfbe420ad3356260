"""Keeps a catalog process's search index in step with PostgreSQL.

Triggers (schema.sql) notify `<schema>.search` from the writing transaction for each product
written, each workshop placed or moved, and each product going in or out of stock: PostgreSQL
delivers the notifications after the commit, in commit order, and never for a rollback. The
follower LISTENs on a connection of its own, then loads every product; from then on it re-reads
the rows notified and replaces their documents. Should the connection fail (or stop answering the
idle check), `ready` goes false at once, so searches run in SQL, until the next LISTEN and load.
Once nothing has been notified for the idle check's time, the index lets its writer go (`rest`)
until the next change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

import asyncpg
from prometheus_client import Counter

from services.catalog.adapters.index import IndexedProduct, ProductIndex
from services.catalog.adapters.postgres import INDEXED_ROWS
from services.platform.db import connect
from services.platform.events.tables import quote_ident
from services.platform.memory import release_memory
from services.platform.outages import DATABASE_FAILURES
from services.platform.resilience import Backoff, wait_set

log = logging.getLogger(__name__)

LOADS = Counter("a4co_search_index_loads", "Whole loads of the search index from PostgreSQL.")
UPDATES = Counter("a4co_search_index_updates", "Products re-read into the search index after a notification.")

CHUNK = 5_000


def channel(schema: str) -> str:
    """The notification channel of a catalog schema's search changes (see schema.sql)."""
    return f"{schema}.search"


def _product(row: asyncpg.Record) -> IndexedProduct:
    return IndexedProduct(*row)


class ConnectionLostError(Exception):
    """The LISTEN connection closed."""


# The connection the follower LISTENs on, lost: it connects again and loads the index anew.
CONNECTION_LOST: tuple[type[BaseException], ...] = (*DATABASE_FAILURES, ConnectionLostError)


class IndexFollower:
    """Loads the index, then applies what PostgreSQL announces; see the module's docstring."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        index: ProductIndex,
        *,
        idle_check_s: float = 5.0,
        backoff: Backoff = Backoff(first_s=0.2, cap_s=5.0),  # noqa: B008 - frozen dataclass
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.index = index
        self.idle_check_s = idle_check_s
        self.backoff = backoff
        self.loads = 0
        self.backend_pid = 0  # the LISTEN connection's server process, for operators and tests
        self._pending: set[str] = set()
        self._wake = asyncio.Event()

    async def follow(self) -> None:
        """Run until cancelled: connect, LISTEN, load, apply; again after any failure."""
        attempt = 0
        while True:
            try:
                conn = await connect(
                    self.dsn,
                    server_settings={
                        "search_path": f"{quote_ident(self.schema)}, public",
                        "application_name": "catalog-search-index",
                    },
                )
            except DATABASE_FAILURES as exc:
                attempt += 1
                await self._pause(attempt, f"cannot reach PostgreSQL: {exc}")
                continue
            loads, reason = self.loads, "connection closed"
            try:
                await self._follow(conn)
            except CONNECTION_LOST as exc:
                reason = f"connection lost: {exc or type(exc).__name__}"
            except Exception as exc:  # the index refused a document, say: never stop following
                log.exception("search index of %s failed", self.schema)
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                self._stop_answering()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2):
                        await conn.close()
            attempt = 1 if self.loads > loads else attempt + 1
            await self._pause(attempt, reason)

    def _stop_answering(self) -> None:
        self.index.ready = False

    async def _pause(self, attempt: int, reason: str) -> None:
        delay = self.backoff.delay(attempt)
        log.warning(
            "search index of %s: %s; searches run in SQL; again in %.1f s", self.schema, reason, delay
        )
        await asyncio.sleep(delay)

    async def _follow(self, conn: asyncpg.Connection) -> None:
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_close(_: object) -> None:
            if not lost.done():
                lost.set_result(None)
            self._stop_answering()
            self._wake.set()

        conn.add_termination_listener(on_close)
        self.backend_pid = conn.get_server_pid()
        self._pending.clear()
        await conn.add_listener(channel(self.schema), self._on_notify)
        await self._load(conn)
        self.index.ready = True
        log.info("search index of %s: %d products loaded; following", self.schema, self.index.documents)
        while True:
            if not self._pending:
                await wait_set(self._wake, self.idle_check_s)
            self._wake.clear()
            if lost.done():
                raise ConnectionLostError("closed")
            if self._pending:
                names, self._pending = self._pending, set()
                await self.apply(conn, names)
            else:  # quiet for idle_check_s: make sure the connection still answers
                await conn.fetchval("SELECT 1", timeout=self.idle_check_s)
                if self.index.writing:  # and let the index's writer go until the next change
                    await asyncio.to_thread(self.index.rest)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self._pending.add(str(payload))
        self._wake.set()

    async def _load(self, conn: asyncpg.Connection) -> None:
        """Every product, into a new index that replaces the current one when complete."""
        loading = self.index.loading()
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            cursor = await conn.cursor(INDEXED_ROWS)
            while rows := await cursor.fetch(CHUNK):
                await asyncio.to_thread(loading.add, [_product(r) for r in rows])
        await asyncio.to_thread(loading.finish)
        # The indexing threads' freed heap (100,000 products, before decision 18: 160 MB RSS
        # without this, 106-111 with).
        release_memory()
        self.loads += 1
        LOADS.inc()

    async def apply(self, conn: asyncpg.Connection, names: Iterable[str]) -> None:
        """Re-read the products named by notifications ("p:<product>", "a:<workshop>")."""
        product_ids = sorted(n[2:] for n in names if n.startswith("p:"))
        artisan_ids = sorted(n[2:] for n in names if n.startswith("a:"))
        for start in range(0, max(len(product_ids), len(artisan_ids)), CHUNK):
            wanted, workshops = product_ids[start : start + CHUNK], artisan_ids[start : start + CHUNK]
            rows = await conn.fetch(
                f"{INDEXED_ROWS} AND (p.product_id = ANY($1::text[]) OR p.artisan_id = ANY($2::text[]))",
                wanted,
                workshops,
            )
            products = [_product(r) for r in rows]
            replaced = set(wanted) | {p.product_id for p in products}
            await asyncio.to_thread(self.index.update, products, replaced)
            UPDATES.inc(len(products))
        release_memory()
