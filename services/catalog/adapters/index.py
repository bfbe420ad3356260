"""catalog's search index: the products' text ranked by BM25 in Tantivy, in files of this process.

PostgreSQL's tables stay the catalogue; the index is derived from them (`follower.py` keeps it in
step) and answers every search while it follows, because ranking thousands of matches in SQL cost
about 45 ms of PostgreSQL CPU per query over 100,000 products, and the index answers the same
query, count included, in about 0.25 ms (docs/performance-history.md, docs/decisions/0016 and 0030).

Text is analysed as PostgreSQL's `spanish` configuration over `unaccent` does it: folded, Spanish
stop words dropped, Snowball Spanish stems. Name, category and description are indexed as one
field, the name three times and the category twice, so that a word weighs most in the name, then
in the category, then in the description, with one term per word to match and score (0.25 ms for
9,000 matches, against 0.6 ms for a choice among three fields per word).

The index's files are in a temporary directory of the process, removed when it ends (or, if it
was killed, by the next index made beside it), and read through memory maps: the kernel's page
cache holds them, not the heap of the threads that wrote them (the catalog holding 100,000
products, both with services/platform/memory.py's two arenas: 95.2 MB RSS on average against
103.5 with the index in memory, three and four runs; docs/performance-history.md). The index is
rebuilt from PostgreSQL at every start, so nothing on disk outlives the process.

Results with words are ordered by score, then by the index's own order of documents (newest first
as loaded; a product changed since comes after the others of its score); without words, newest
first, or nearest first and then newest near a point: so that pages never overlap nor skip a
result while the index is unchanged.

Searches near a point count the matches at each place first (a product is where its workshop is,
so the places are few): the radius is then exact, and a page reads only its own products.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TextIO

import tantivy
from prometheus_client import Gauge

from services.catalog.domain import SearchFilters
from services.platform.memory import release_memory

DOCUMENTS = Gauge("a4co_search_index_documents", "Products in this process's search index.")
READY = Gauge(
    "a4co_search_index_ready",
    "1 while the search index follows PostgreSQL and answers the searches; 0 while they run in SQL.",
)

NAME_WEIGHT, CATEGORY_WEIGHT = 3, 2
WRITER_HEAP_BYTES = 15_000_000  # Tantivy's minimum for one indexing thread
EARTH_RADIUS_KM = 6371.0088
KNOWN_WORDS = 10_000  # words remembered by `knows` at most
# The most places a search near a point counts (workshops in the box around its circle); past it,
# the search runs in SQL. Tantivy's aggregations stop at 65,000 buckets.
MAX_PLACES = 10_000

# Folded, stop words dropped, then stemmed: the order of PostgreSQL's unaccent + `spanish`.
ANALYZER = (
    tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
    .filter(tantivy.Filter.lowercase())
    .filter(tantivy.Filter.ascii_fold())
    .filter(tantivy.Filter.stopword("spanish"))
    .filter(tantivy.Filter.stemmer("spanish"))
    .build()
)


@dataclass(frozen=True, slots=True)
class IndexedProduct:
    """What the index knows of a product: its text and what searches filter by."""

    product_id: str
    artisan_id: str
    name: str
    description: str
    category: str
    price_cents: int
    publish_time: datetime
    in_stock: bool
    latitude: float
    longitude: float


@dataclass(frozen=True, slots=True)
class Ranked:
    """One result of the index: which product, its score and its distance (0 without `near`)."""

    product_id: str
    score: float
    distance_km: float


class TooManyPlacesError(Exception):
    """More places around a point than a search near it counts (`MAX_PLACES`)."""


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("product_id", stored=True, tokenizer_name="raw")
    builder.add_text_field("text", tokenizer_name="es", index_option="freq")
    builder.add_text_field("category", tokenizer_name="raw")
    builder.add_text_field("artisan_id", tokenizer_name="raw")
    builder.add_text_field("place", tokenizer_name="raw", fast=True)  # `_place`: counted by place
    builder.add_integer_field("price_cents", fast=True)
    builder.add_integer_field("publish_us", fast=True)
    builder.add_boolean_field("in_stock", indexed=True)
    builder.add_float_field("latitude", fast=True)
    builder.add_float_field("longitude", fast=True)
    return builder.build()


def _document(p: IndexedProduct) -> tantivy.Document:
    return tantivy.Document(
        product_id=p.product_id,
        text=" ".join([p.name] * NAME_WEIGHT + [p.category] * CATEGORY_WEIGHT + [p.description]),
        category=p.category,
        artisan_id=p.artisan_id,
        place=_place(p.latitude, p.longitude),
        price_cents=p.price_cents,
        publish_us=int(p.publish_time.timestamp() * 1_000_000),
        in_stock=p.in_stock,
        latitude=p.latitude,
        longitude=p.longitude,
    )


def _place(latitude: float, longitude: float) -> str:
    """A point as one term, read back exactly by `_point`."""
    return f"{float(latitude)!r},{float(longitude)!r}"


def _point(place: str) -> tuple[float, float]:
    latitude, longitude = place.split(",")
    return float(latitude), float(longitude)


def distance_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle (haversine) distance, as catalog's SQL computes it."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    h = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lng2 - lng1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def _product_id(searcher: tantivy.Searcher, address: tantivy.DocAddress) -> str:
    """The product of a hit: its one stored field."""
    return str(searcher.doc(address).get_first("product_id"))


DIRECTORY_PREFIX = "a4co-search-"
OWNER_LOCK = "owner.lock"
FRESH_S = 60.0  # a directory without its lock file yet may be one another process just made


def _owned_directory(parent: Path | None) -> tuple[Path, TextIO]:
    """A new index directory, and its lock file held locked for as long as this process lives:
    a lock nobody holds marks a directory whose process ended without removing it."""
    directory = Path(tempfile.mkdtemp(prefix=DIRECTORY_PREFIX, dir=parent))
    owner = (directory / OWNER_LOCK).open("w")
    fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return directory, owner


def _remove_owned(directory: Path, owner: TextIO) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    owner.close()


def remove_abandoned(parent: Path) -> list[Path]:
    """Remove the index directories under `parent` whose process ended without removing them
    (killed with SIGKILL, say); returns them. Works across processes and containers that share
    the directory, since it asks the lock, not the process table."""
    removed = []
    for directory in parent.glob(f"{DIRECTORY_PREFIX}*"):
        try:
            with (directory / OWNER_LOCK).open() as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a living process: refused
                shutil.rmtree(directory, ignore_errors=True)
        except BlockingIOError:
            continue
        except FileNotFoundError:  # no lock file: being created now, or left half made long ago
            with contextlib.suppress(OSError):
                if time.time() - directory.stat().st_mtime > FRESH_S:
                    shutil.rmtree(directory, ignore_errors=True)
            continue
        except OSError:  # not ours to remove
            continue
        removed.append(directory)
    return removed


class Loading:
    """A whole new index being filled; it replaces the current one when finished."""

    def __init__(self, target: ProductIndex) -> None:
        self._target = target
        self._index, self._path = target.new_tantivy_index()
        self._writer = self._index.writer(heap_size=WRITER_HEAP_BYTES, num_threads=1)

    def add(self, products: Iterable[IndexedProduct]) -> None:
        """Index some products (blocking; run it in a thread)."""
        for p in products:
            self._writer.add_document(_document(p))

    def finish(self) -> None:
        """Commit, and make the new index the one searched (blocking; run it in a thread)."""
        self._writer.commit()
        self._index.reload()
        self._target.swap(self._index, self._writer, self._path)


class ProductIndex:
    """The search index of one catalog process; `ready` is set by whoever keeps it in step."""

    def __init__(self, parent: Path | None = None) -> None:
        """An empty index, its files in a new directory under `parent` (the system's temporary
        directory by default), removed by `close` or when the process ends."""
        self.schema = _schema()
        self.directory, owner = _owned_directory(parent)
        self._remove = weakref.finalize(self, _remove_owned, self.directory, owner)
        remove_abandoned(self.directory.parent)
        self._index, self._path = self.new_tantivy_index()
        # One writer kept while updates come (a new writer per update grew the process by 24 MB
        # over 300 single-product updates), let go once they stop (`rest`): an idle writer held
        # 2.6 and 7.5 MB with 100,000 products (two runs).
        self._writer: tantivy.IndexWriter | None = None
        self._ready = False
        self.documents = 0
        # Whether the index searched knows a word (`knows`), for as long as it is unchanged.
        self._known: dict[str, bool] = {}

    @property
    def ready(self) -> bool:
        """Whether the index follows PostgreSQL, so that searches may use it (exported as a gauge)."""
        return self._ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self._ready = value
        READY.set(int(value))

    def new_tantivy_index(self) -> tuple[tantivy.Index, Path]:
        """An empty index with this schema and the Spanish analyser, and its new directory."""
        path = Path(tempfile.mkdtemp(prefix="index-", dir=self.directory))
        index = tantivy.Index(
            self.schema, path=str(path), sort_by_field="publish_us", sort_order=tantivy.Order.Desc
        )
        index.register_tokenizer("es", ANALYZER)
        index.config_reader(reload_policy="Manual")
        return index, path

    def swap(self, index: tantivy.Index, writer: tantivy.IndexWriter, path: Path) -> None:
        """Search `index` (in `path`) from now on, and update it with `writer`; the index it
        replaces is removed once its merges have finished (blocking; run it in a thread)."""
        old_writer, old_path = self._writer, self._path
        self._index, self._writer, self._path = index, writer, path
        self._searched()
        if old_writer is not None:
            old_writer.wait_merging_threads()  # nothing writes in old_path any more
        # A search still on the old index keeps reading it: its files stay mapped until then.
        shutil.rmtree(old_path, ignore_errors=True)

    @property
    def writing(self) -> bool:
        """Whether the index holds a writer (from its last load or update until it rests)."""
        return self._writer is not None

    def rest(self) -> None:
        """Let go of the writer once its background merges are done, search the merged segments,
        and give back the memory the writer held (blocking; run it in a thread). The next update
        takes a new writer."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        writer.wait_merging_threads()
        self._index.reload()
        self._searched()
        release_memory()

    def close(self) -> None:
        """Remove the index's files; it must not be searched nor updated afterwards."""
        self._remove()

    def _searched(self) -> None:
        """The index now searched has changed (its documents, or the index itself): count its
        documents, and forget which words it knows. Called after the change, so that a word
        looked up meanwhile is kept in the table being replaced, not in the new one."""
        self.documents = self._index.searcher().num_docs
        DOCUMENTS.set(self.documents)
        self._known = {}

    def loading(self) -> Loading:
        """Start filling a new index that will replace this one."""
        return Loading(self)

    def update(self, products: Sequence[IndexedProduct], product_ids: Iterable[str]) -> None:
        """Replace the documents of `product_ids` by `products` (blocking; run it in a thread).

        Ids without a product among `products` lose their document.
        """
        if self._writer is None:
            self._writer = self._index.writer(heap_size=WRITER_HEAP_BYTES, num_threads=1)
        writer = self._writer
        for product_id in product_ids:
            writer.delete_documents_by_term("product_id", product_id)
        for p in products:
            writer.add_document(_document(p))
        writer.commit()
        self._index.reload()
        self._searched()

    def search(
        self, words: Sequence[str], any_word: bool, filters: SearchFilters, offset: int, limit: int
    ) -> tuple[list[Ranked], int]:
        """One page of products matching every word (or any, with `any_word`), best first, and
        the total. TooManyPlacesError near a point with more places around it than it counts."""
        query = self._query(words, any_word, filters)
        if query is None:
            return [], 0
        searcher = self._index.searcher()
        if filters.near:
            within = self._places(searcher, query, filters)
            if not within:
                return [], 0
            query = self._at(query, [place for _, place, _ in within])
        # Tantivy breaks ties between equal scores by document order, the same on every page.
        found = searcher.search(query, limit=limit, offset=offset, count=True)
        total = int(found.count or 0)  # type: ignore[attr-defined]  # set with count=True; not in the stubs
        page = [Ranked(_product_id(searcher, a), float(score), 0.0) for score, a in found.hits]
        if filters.near and page:  # each result's distance, as its place's was measured
            lat, lng = filters.near
            addresses = [address for _, address in found.hits]
            points = zip(
                searcher.fast_field_values("latitude", addresses),
                searcher.fast_field_values("longitude", addresses),
                strict=True,
            )
            page = [
                replace(r, distance_km=distance_km(float(p or 0), float(q or 0), lat, lng))
                for r, (p, q) in zip(page, points, strict=True)
            ]
        return page, total

    def browse(self, filters: SearchFilters, offset: int, limit: int) -> tuple[list[Ranked], int]:
        """One page of the products the filters take, without words, and the total: newest first,
        or near a point nearest first, then newest. TooManyPlacesError as `search`."""
        searcher = self._index.searcher()
        conditions = [(tantivy.Occur.Must, c) for c in self._filters(filters)]
        query = tantivy.Query.boolean_query(conditions) if conditions else tantivy.Query.all_query()
        if not filters.near:
            return self._newest(searcher, query, offset, limit, 0.0, count=True)
        within = self._places(searcher, query, filters)
        page: list[Ranked] = []
        skip = offset
        for km, place, count in within:  # nearest first: the page's places, in turn
            if len(page) == limit:
                break
            if skip >= count:
                skip -= count
                continue
            here, _ = self._newest(searcher, self._at(query, [place]), skip, limit - len(page), km)
            page += here
            skip = 0
        return page, sum(count for _, _, count in within)

    @staticmethod
    def _newest(
        searcher: tantivy.Searcher,
        query: tantivy.Query,
        offset: int,
        limit: int,
        distance: float,
        count: bool = False,
    ) -> tuple[list[Ranked], int]:
        """A page of `query`'s matches, newest first (ties in document order), and with `count`
        their number."""
        found = searcher.search(query, limit=limit, offset=offset, count=count, order_by_field="publish_us")
        page = [Ranked(_product_id(searcher, a), 0.0, distance) for _, a in found.hits]
        return page, int(found.count or 0) if count else 0  # type: ignore[attr-defined]

    def _at(self, query: tantivy.Query, places: list[str]) -> tantivy.Query:
        """`query`'s matches at these places."""
        at = tantivy.Query.term_set_query(self.schema, "place", places)
        return tantivy.Query.boolean_query([(tantivy.Occur.Must, query), (tantivy.Occur.Must, at)])

    @staticmethod
    def _places(
        searcher: tantivy.Searcher, query: tantivy.Query, filters: SearchFilters
    ) -> list[tuple[float, str, int]]:
        """The places of `query`'s matches within the radius, as (distance, place, matches there),
        nearest first (a tie by place).

        Counted by place in one pass over the matches (over 100,000 products, 1.0-1.3 ms for the
        9,094 matches of three words within 500 km, where reading every candidate's distance took
        17-25 ms; docs/performance-history.md)."""
        assert filters.near is not None
        lat, lng = filters.near
        counted = searcher.aggregate(query, {"at": {"terms": {"field": "place", "size": MAX_PLACES}}})["at"]
        if counted.get("sum_other_doc_count"):
            raise TooManyPlacesError(f"more than {MAX_PLACES} places around ({lat}, {lng})")
        within = []
        for bucket in counted["buckets"]:
            place = bucket["key"]
            km = distance_km(*_point(place), lat, lng)
            if km <= filters.radius_km:
                within.append((km, place, int(bucket["doc_count"])))
        within.sort()
        return within

    def knows(self, word: str) -> bool:
        """Whether some product has this word (or it is a stop word), so it needs no correcting.

        Remembered until the index changes: a search's words are analysed and looked up once
        (11 µs for three words in a loop, against 1 once remembered).
        """
        known = self._known
        found = known.get(word)
        if found is None:
            searcher = self._index.searcher()
            found = all(searcher.doc_freq("text", stem) > 0 for stem in ANALYZER.analyze(word))
            if len(known) >= KNOWN_WORDS:  # words that no product has, typed by anyone, are many
                known = self._known = {}
            known[word] = found
        return found

    def _query(self, words: Sequence[str], any_word: bool, filters: SearchFilters) -> tantivy.Query | None:
        """The words and the filters, or None when no word remains."""
        schema = self.schema
        terms = [
            tantivy.Query.term_query(schema, "text", stem, index_option="freq")
            for word in words
            for stem in ANALYZER.analyze(word)  # none for a stop word
        ]
        if not terms:
            return None
        conditions = self._filters(filters)
        occur = tantivy.Occur.Should if any_word else tantivy.Occur.Must
        clauses = [(occur, term) for term in terms]
        if any_word and conditions:  # beside a Must, a Should no longer decides what matches
            clauses = [(tantivy.Occur.Must, tantivy.Query.boolean_query(clauses))]
        for condition in conditions:
            clauses.append((tantivy.Occur.Must, tantivy.Query.const_score_query(condition, 0.0)))
        return tantivy.Query.boolean_query(clauses)

    def _filters(self, filters: SearchFilters) -> list[tantivy.Query]:
        schema, integer, real = self.schema, tantivy.FieldType.Integer, tantivy.FieldType.Float
        found = []
        if filters.category:
            found.append(tantivy.Query.term_query(schema, "category", filters.category))
        if filters.artisan_id:
            found.append(tantivy.Query.term_query(schema, "artisan_id", filters.artisan_id))
        if filters.min_price_cents is not None or filters.max_price_cents is not None:
            found.append(
                tantivy.Query.range_query(
                    schema, "price_cents", integer, filters.min_price_cents, filters.max_price_cents
                )
            )
        if filters.in_stock_only:
            found.append(tantivy.Query.term_query(schema, "in_stock", True))
        if filters.near:
            # A box around the circle narrows the candidates; the distance decides afterwards.
            lat, lng = filters.near
            angle = filters.radius_km / EARTH_RADIUS_KM
            d_lat = math.degrees(angle) + 1e-9
            found.append(tantivy.Query.range_query(schema, "latitude", real, lat - d_lat, lat + d_lat))
            spread = math.sin(angle) / max(math.cos(math.radians(lat)), 1e-12)
            if spread < 1:  # else the circle reaches a pole: every longitude
                d_lng = math.degrees(math.asin(spread)) + 1e-9
                if lng - d_lng >= -180 and lng + d_lng <= 180:  # else it crosses the antimeridian
                    found.append(
                        tantivy.Query.range_query(schema, "longitude", real, lng - d_lng, lng + d_lng)
                    )
        return found
