"""catalog's projections and search, on PostgreSQL full-text search and pg_trgm."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

import asyncpg
from prometheus_client import Counter

from services.catalog.adapters.index import ProductIndex, Ranked, TooManyPlacesError
from services.catalog.domain import MIN_CORRECTABLE, Hit, ProductView, SearchFilters, tokens
from services.platform.coalesce import Coalescer
from services.platform.db import Connection, columns

# A product's searchable text: name weighs most, then category and workshop, then description.
_SEARCH_VECTOR = (
    "setweight(to_tsvector('spanish', unaccent($3)), 'A')"
    " || setweight(to_tsvector('spanish', unaccent($5)), 'B')"
    " || setweight(to_tsvector('spanish', unaccent($4)), 'C')"
)
# ProductView's columns, in its fields' order: a row's first values are the view's arguments.
_VIEW_COLUMNS = {
    "product_id": "p.product_id",
    "artisan_id": "p.artisan_id",
    "artisan_name": "coalesce(a.display_name, '') AS artisan_name",
    "name": "p.name",
    "description": "p.description",
    "category": "p.category",
    "price_cents": "p.price_cents",
    "currency_code": "p.currency_code",
    "locality": "coalesce(a.locality, '') AS locality",
    "latitude": "coalesce(a.latitude, 0) AS latitude",
    "longitude": "coalesce(a.longitude, 0) AS longitude",
    "available": "coalesce(s.available, 0) AS available",
    "low_stock": "coalesce(s.low_threshold > 0 AND s.available < s.low_threshold, false) AS low_stock",
    "publish_time": "p.publish_time",
    "revision": "p.revision",
    "return_exception": "p.return_exception",
}
_COLUMNS = ", ".join(_VIEW_COLUMNS[name] for name in ProductView._fields)
_VIEW_WIDTH = len(ProductView._fields)
_FROM = """FROM products p
 LEFT JOIN artisans a ON a.artisan_id = p.artisan_id
 LEFT JOIN availability s ON s.product_id = p.product_id"""


# What the search index keeps of each product, in IndexedProduct's order (adapters/follower.py).
# Products on sale only: a withdrawn one leaves the index. A query adds its conditions with AND.
INDEXED_ROWS = f"""SELECT p.product_id, p.artisan_id, p.name, p.description, p.category, p.price_cents,
 p.publish_time, coalesce(s.available, 0) > 0 AS in_stock,
 coalesce(a.latitude, 0) AS latitude, coalesce(a.longitude, 0) AS longitude {_FROM}
 WHERE p.withdrawn_at IS NULL"""

log = logging.getLogger(__name__)

SEARCHES = Counter("a4co_searches", "SearchProducts answered, by engine (index or sql).", ["engine"])
_BY_INDEX, _BY_SQL = SEARCHES.labels("index"), SEARCHES.labels("sql")


def _distance(lat: str, lng: str) -> str:
    """The haversine distance in km from the workshop to ($lat, $lng)."""
    return (
        f"(2 * 6371.0088 * asin(sqrt(power(sin(radians(coalesce(a.latitude, 0) - {lat}) / 2), 2)"
        f" + cos(radians({lat})) * cos(radians(coalesce(a.latitude, 0)))"
        f" * power(sin(radians(coalesce(a.longitude, 0) - {lng}) / 2), 2))))"
    )


def _view(row: asyncpg.Record) -> ProductView:
    # By position (the columns follow the fields): a fifth of the cost of fourteen look-ups by name.
    return ProductView._make(row[:_VIEW_WIDTH])


class Projections:
    """Writes from events: products, workshops, availability, lexicon."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def upsert_product(
        self,
        product_id: str,
        artisan_id: str,
        name: str,
        description: str,
        category: str,
        price_cents: int,
        currency_code: str,
        publish_time: datetime,
        revision: int = 1,
        withdrawn_at: datetime | None = None,
        return_exception: str = "",
    ) -> None:
        """Record a product as of its `revision` (its publication is 1), and learn its words; a
        revision older than the one recorded changes nothing, whatever order they arrive in."""
        await self.conn.execute(
            "INSERT INTO products (product_id, artisan_id, name, description, category, price_cents,"
            " currency_code, publish_time, name_norm, search, revision, withdrawn_at, return_exception)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, lower(unaccent($3)),"
            f" {_SEARCH_VECTOR}, $9, $10, $11) ON CONFLICT (product_id) DO UPDATE SET"
            " artisan_id = EXCLUDED.artisan_id, name = EXCLUDED.name, description = EXCLUDED.description,"
            " category = EXCLUDED.category, price_cents = EXCLUDED.price_cents,"
            " currency_code = EXCLUDED.currency_code, publish_time = EXCLUDED.publish_time,"
            " name_norm = EXCLUDED.name_norm, search = EXCLUDED.search, revision = EXCLUDED.revision,"
            " withdrawn_at = EXCLUDED.withdrawn_at, return_exception = EXCLUDED.return_exception"
            " WHERE products.revision < EXCLUDED.revision",
            product_id,
            artisan_id,
            name,
            description,
            category,
            price_cents,
            currency_code,
            publish_time,
            revision,
            withdrawn_at,
            return_exception,
        )
        text = f"{name} {description} {category}"
        words = sorted({w for w in tokens(text) if len(w) >= MIN_CORRECTABLE and w.isalpha()})
        await self.conn.execute(
            "INSERT INTO lexicon (word) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", words
        )

    async def upsert_artisan(
        self, artisan_id: str, name: str, locality: str, lat: float, lng: float, revision: int = 1
    ) -> None:
        """Record or replace a workshop, unless a newer revision of it is recorded (its events may
        arrive in any order; the same revision again changes nothing)."""
        await self.conn.execute(
            "INSERT INTO artisans (artisan_id, display_name, locality, latitude, longitude, revision)"
            " VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (artisan_id) DO UPDATE SET display_name = EXCLUDED.display_name,"
            " locality = EXCLUDED.locality, latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude,"
            " revision = EXCLUDED.revision WHERE artisans.revision <= EXCLUDED.revision",
            artisan_id,
            name,
            locality,
            lat,
            lng,
            revision,
        )

    async def set_available(self, product_id: str, available: int, as_of: datetime) -> None:
        """Availability as of a moment; an older report never overwrites a newer one."""
        await self.set_available_many([(product_id, available, as_of)])

    async def set_available_many(self, reports: Iterable[tuple[str, int, datetime]]) -> None:
        """Availability reports (product, available, as of), in the order they came, with one
        statement; of a product's, the newest counts (the last of equally new ones), and an older
        report never overwrites a newer one."""
        newest: dict[str, tuple[str, int, datetime]] = {}
        for report in reports:
            kept = newest.get(report[0])
            if kept is None or kept[2] <= report[2]:
                newest[report[0]] = report
        await self.conn.execute(
            "INSERT INTO availability (product_id, available, as_of)"
            " SELECT * FROM unnest($1::text[], $2::integer[], $3::timestamptz[])"
            " ON CONFLICT (product_id) DO UPDATE SET available = EXCLUDED.available, as_of = EXCLUDED.as_of"
            " WHERE availability.as_of <= EXCLUDED.as_of",
            *columns(newest.values(), 3),
        )

    async def set_low_threshold(
        self, product_id: str, available: int, threshold: int, as_of: datetime
    ) -> None:
        """A low-stock warning: remember the threshold, and the availability it reported."""
        await self.conn.execute(
            "INSERT INTO availability (product_id, available, low_threshold, as_of) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (product_id) DO UPDATE SET low_threshold = EXCLUDED.low_threshold,"
            " available = CASE WHEN availability.as_of <= EXCLUDED.as_of THEN EXCLUDED.available"
            " ELSE availability.available END, as_of = greatest(availability.as_of, EXCLUDED.as_of)",
            product_id,
            available,
            threshold,
            as_of,
        )


class Search:
    """Reads: one product, and ranked searches.

    Searches go to the process's search index while it follows PostgreSQL (`index.ready`), and
    run in SQL while it does not, or near a point with more places around it than the index
    counts. The products the index found, and single products, are read by id, the ids of every
    call waiting read with one statement (services/platform/coalesce.py).
    """

    def __init__(self, pool: asyncpg.Pool, index: ProductIndex | None = None) -> None:
        self.pool = pool
        self.index = index
        self._views = Coalescer("catalog_products", self._read_views)

    async def _read_views(self, product_ids: list[str]) -> dict[str, ProductView]:
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} {_FROM} WHERE p.product_id = ANY($1::text[]) AND p.withdrawn_at IS NULL",
            product_ids,
        )
        return {view.product_id: view for view in map(_view, rows)}

    async def product(self, product_id: str) -> ProductView | None:
        """One product on sale with its workshop and availability."""
        return (await self._views.get([product_id])).get(product_id)

    async def withdrawn(self, product_id: str) -> bool:
        """Whether a product was withdrawn from sale."""
        return bool(
            await self.pool.fetchval(
                "SELECT withdrawn_at IS NOT NULL FROM products WHERE product_id = $1", product_id
            )
        )

    async def correct(self, words: list[str]) -> list[str]:
        """Each query word, or the closest catalogue word when it is unknown (typos)."""
        if not words:
            return []
        rows = await self.pool.fetch(
            "SELECT t.word AS typed, coalesce("
            " (SELECT l.word FROM lexicon l WHERE l.word = t.word),"
            " (SELECT l.word FROM lexicon l"
            "  WHERE length(t.word) >= $2 AND t.word ~ '^[a-z]+$' AND l.word % t.word"
            "  ORDER BY similarity(l.word, t.word) DESC, l.word LIMIT 1),"
            " t.word) AS word"
            " FROM unnest($1::text[]) WITH ORDINALITY AS t(word, i) ORDER BY t.i",
            words,
            MIN_CORRECTABLE,
        )
        return [r["word"] for r in rows]

    async def search(self, filters: SearchFilters, offset: int, limit: int) -> tuple[list[Hit], int]:
        """One page of results and the number of matches in all: best first; without words newest
        first, or near a point nearest first, then newest."""
        typed = tokens(filters.query)
        index = self.index if self.index is not None and self.index.ready else None
        if index is not None:
            try:
                ranked, total = await self._in_index(index, typed, filters, offset, limit)
            except TooManyPlacesError as exc:
                log.debug("a search in SQL: %s", exc)
            else:
                _BY_INDEX.inc()
                return await self._page(ranked), total
        _BY_SQL.inc()
        words = await self.correct(typed)
        if words:
            hits, total = await self._search(filters, " ".join(words), "plainto", offset, limit)
            if total == 0:  # no product has every word: rank those with any of them
                hits, total = await self._search(filters, " | ".join(words), "to", offset, limit)
            return hits, total
        return await self._search(filters, "", "", offset, limit)

    async def _in_index(
        self, index: ProductIndex, typed: list[str], filters: SearchFilters, offset: int, limit: int
    ) -> tuple[list[Ranked], int]:
        if not typed:
            return index.browse(filters, offset, limit)
        # Only the words no product has go to the lexicon (usually none: no round trip).
        unknown = [w for w in typed if not index.knows(w)]
        corrected = dict(zip(unknown, await self.correct(unknown), strict=True))
        words = [corrected.get(w, w) for w in typed]
        ranked, total = index.search(words, False, filters, offset, limit)
        if total == 0:  # no product has every word: rank those with any of them
            ranked, total = index.search(words, True, filters, offset, limit)
        return ranked, total

    async def _page(self, ranked: list[Ranked]) -> list[Hit]:
        """The products of a page the index ranked, in its order."""
        views = await self._views.get([r.product_id for r in ranked])
        return [Hit(views[r.product_id], r.score, r.distance_km) for r in ranked if r.product_id in views]

    async def _search(
        self, filters: SearchFilters, text: str, parser: str, offset: int, limit: int
    ) -> tuple[list[Hit], int]:
        args: list[object] = []

        def arg(value: object) -> str:
            args.append(value)
            return f"${len(args)}"

        where, score, distance, order = (
            ["p.withdrawn_at IS NULL"],
            "0.0::float8",
            "0.0::float8",
            "p.publish_time DESC",
        )
        ctes, joins = [], ""
        if text:
            q = f"{parser}_tsquery('spanish', {arg(text)})"
            raw = arg(" ".join(tokens(filters.query)))
            # Typos were corrected against the lexicon already, so the full-text index alone finds
            # the candidates; name similarity only refines their order.
            where.append(f"p.search @@ {q}")
            score = f"(ts_rank(p.search, {q}, 1) + similarity(p.name_norm, {raw}))::float8"
            order = "score DESC, p.publish_time DESC"
        if filters.near:
            # A product is where its workshop is: each workshop's distance is measured once (over
            # 100,000 products of 24 workshops, the haversine of every product took 58 of the
            # statement's 138 ms). A product whose workshop is unknown yet lies at (0, 0), as in
            # the index.
            km = _distance(arg(filters.near[0]), arg(filters.near[1]))
            ctes.append(f"near AS (SELECT a.artisan_id, {km} AS km FROM artisans a)")
            joins = " LEFT JOIN near n ON n.artisan_id = p.artisan_id"
            nowhere = "(SELECT NULL::float8 AS latitude, NULL::float8 AS longitude) a"
            distance = f"coalesce(n.km, (SELECT {km} FROM {nowhere}))"
            where.append(f"{distance} <= {arg(filters.radius_km)}")
            order = order if text else "distance_km ASC, p.publish_time DESC"  # as in the index
        if filters.category:
            where.append(f"p.category = {arg(filters.category)}")
        if filters.artisan_id:
            where.append(f"p.artisan_id = {arg(filters.artisan_id)}")
        if filters.min_price_cents is not None:
            where.append(f"p.price_cents >= {arg(filters.min_price_cents)}")
        if filters.max_price_cents is not None:
            where.append(f"p.price_cents <= {arg(filters.max_price_cents)}")
        if filters.in_stock_only:
            where.append("coalesce(s.available, 0) > 0")
        # Rank and count the matches on narrow rows, then fetch what a page shows for its rows
        # only: carrying every column of thousands of matches through the count made PostgreSQL
        # spill the window to disk (83 → 59 ms for 9,000 matches of 100,000 products).
        ranked = f"p.product_id, p.publish_time, {score} AS score, {distance} AS distance_km"
        body = f"{_FROM}{joins} WHERE {' AND '.join(where)}"
        before = "".join(f"{cte}, " for cte in ctes)
        sql = (
            f"WITH {before}page AS (SELECT {ranked}, count(*) OVER () AS total {body}"
            f" ORDER BY {order}, p.product_id LIMIT {arg(limit)} OFFSET {arg(offset)})"
            f" SELECT {_COLUMNS}, page.score, page.distance_km, page.total FROM page"
            f" JOIN products p ON p.product_id = page.product_id"
            " LEFT JOIN artisans a ON a.artisan_id = p.artisan_id"
            " LEFT JOIN availability s ON s.product_id = p.product_id"
            f" ORDER BY {order}, p.product_id"
        )
        rows = await self.pool.fetch(sql, *args)
        hits = [Hit(_view(r), float(r["score"]), float(r["distance_km"])) for r in rows]
        if rows:
            return hits, int(rows[0]["total"])
        return hits, 0 if offset == 0 else await self._count(before, f"SELECT {ranked} {body}", args)

    async def _count(self, before: str, matches: str, args: list[object]) -> int:
        """The total of a search whose page is past the end (`before`: the search's CTEs, each
        followed by a comma)."""
        ctes = f"WITH {before.removesuffix(', ')} " if before else ""
        return int(
            await self.pool.fetchval(f"{ctes}SELECT count(*) FROM ({matches}) AS all_hits", *args[:-2])
        )
