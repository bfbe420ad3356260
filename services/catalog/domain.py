"""Search requests, query normalisation and page tokens: pure Python, no I/O."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from services.platform.errors import FieldViolation, InvalidArgumentError
from services.platform.paging import NOT_OURS, fingerprint, pack, unpack

MIN_CORRECTABLE = 4  # shorter words are stop words or too short to correct safely
# Pages start within a search's first 10,000 results, as in Elasticsearch (its
# `index.max_result_window`): the index keeps every result up to the page's end in memory while it
# ranks, and a page token from a client that asked for the 2,147,483,648th made it ask for 34 GB,
# which aborted the process. total_size still counts every match.
MAX_PAGED = 10_000


def fold(text: str) -> str:
    """Lower case without accents, as PostgreSQL's unaccent does ("Jaén" -> "jaen", "ñ" -> "n")."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def tokens(text: str) -> list[str]:
    """The words of a query, folded."""
    return re.findall(r"[a-z0-9]+", fold(text))


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """Everything a search narrows by; part of the page token, so pages stay consistent."""

    query: str = ""
    category: str = ""
    artisan_id: str = ""
    min_price_cents: int | None = None
    max_price_cents: int | None = None
    near: tuple[float, float] | None = None
    radius_km: float = 0.0
    in_stock_only: bool = False

    def fingerprint(self) -> str:
        """A short hash of the filters."""
        fields = {name: getattr(self, name) for name in self.__slots__}  # asdict, without its deep copy
        return fingerprint(fields)


class ProductView(NamedTuple):
    """A product as the catalog shows it.

    A named tuple rather than a frozen dataclass: a search page makes twenty from rows, and a
    tuple is made from one at a sixth of the cost (0.6 against 3.5 µs in a loop;
    docs/performance-history.md).
    """

    product_id: str
    artisan_id: str
    artisan_name: str
    name: str
    description: str
    category: str
    price_cents: int
    currency_code: str
    locality: str
    latitude: float
    longitude: float
    available: int
    low_stock: bool
    publish_time: datetime
    revision: int
    return_exception: str  # services/platform/return_exceptions.py; empty when it may be returned


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result."""

    product: ProductView
    score: float
    distance_km: float


def encode_page_token(offset: int, filters: str) -> str:
    """An opaque token for the page starting at `offset` of the search with this fingerprint."""
    return pack({"o": offset, "f": filters})


def decode_page_token(token: str, filters: str) -> int:
    """The offset of a page token; INVALID_ARGUMENT when it is malformed or from another search."""
    if not token:
        return 0
    try:
        data = unpack(token)
        offset, data_fingerprint = int(data["o"]), str(data["f"])
    except (ValueError, KeyError, TypeError):
        raise InvalidArgumentError([FieldViolation("page_token", NOT_OURS)]) from None
    if data_fingerprint != filters or offset < 0:
        raise InvalidArgumentError([FieldViolation("page_token", "belongs to a search with other filters")])
    if offset >= MAX_PAGED:
        raise InvalidArgumentError(
            [FieldViolation("page_token", f"starts past the first {MAX_PAGED:,} results; narrow the search")]
        )
    return offset
