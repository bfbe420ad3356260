"""A search's page tokens: they round-trip, belong to one search, and reach its first 10,000 results."""

from __future__ import annotations

import pytest

from services.catalog import handlers
from services.catalog.domain import (
    MAX_PAGED,
    Hit,
    ProductView,
    SearchFilters,
    decode_page_token,
    encode_page_token,
)
from services.platform.errors import InvalidArgumentError

FILTERS = SearchFilters(query="aceite")


def test_a_token_round_trips_within_its_search() -> None:
    token = encode_page_token(40, FILTERS.fingerprint())
    assert decode_page_token(token, FILTERS.fingerprint()) == 40
    assert decode_page_token("", FILTERS.fingerprint()) == 0


@pytest.mark.parametrize(
    ("offset", "filters", "says"),
    [
        (MAX_PAGED, FILTERS, "starts past the first 10,000 results; narrow the search"),
        (2**31, FILTERS, "starts past the first 10,000 results; narrow the search"),
        (10**40, FILTERS, "starts past the first 10,000 results; narrow the search"),
        (20, SearchFilters(query="miel"), "belongs to a search with other filters"),
        (-1, FILTERS, "belongs to a search with other filters"),
    ],
)
def test_a_token_past_the_paged_results_or_of_another_search_is_refused(
    offset: int, filters: SearchFilters, says: str
) -> None:
    with pytest.raises(InvalidArgumentError) as bad:
        decode_page_token(encode_page_token(offset, filters.fingerprint()), FILTERS.fingerprint())
    assert [(v.field, v.description) for v in bad.value.violations] == [("page_token", says)]


class _Matches:
    """A search over `total` matches (a fake of the adapter: this tests the use case's paging)."""

    def __init__(self, total: int) -> None:
        self.total = total

    async def search(self, filters: SearchFilters, offset: int, limit: int) -> tuple[list[Hit], int]:
        view = ProductView("p", "a", "", "", "", "", 0, "EUR", "", 0.0, 0.0, 0, False, None, 1, "")  # type: ignore[arg-type]
        return [Hit(view, 0.0, 0.0)] * max(0, min(limit, self.total - offset)), self.total


@pytest.mark.parametrize(
    ("total", "offset", "next_offset"),
    [
        (100, 0, 20),
        (100, 80, None),  # the last page
        (50_000, MAX_PAGED - 40, MAX_PAGED - 20),
        (50_000, MAX_PAGED - 20, None),  # the deepest page, though more match
    ],
)
async def test_the_pages_stop_at_the_paged_results_and_the_total_counts_every_match(
    total: int, offset: int, next_offset: int | None
) -> None:
    deps = handlers.Deps(search=_Matches(total))  # type: ignore[arg-type]
    token = encode_page_token(offset, FILTERS.fingerprint()) if offset else ""
    page = await handlers.search_products(deps, FILTERS, 20, token)
    assert page.total == total
    expected = "" if next_offset is None else encode_page_token(next_offset, FILTERS.fingerprint())
    assert page.next_page_token == expected
