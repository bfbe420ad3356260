"""Page tokens: opaque, round-trip, and a bad one is INVALID_ARGUMENT naming page_token."""

from __future__ import annotations

import base64
from types import SimpleNamespace

import pytest

from services.platform.errors import InvalidArgumentError
from services.platform.paging import MAX_OFFSET, Page, next_token, offset_of


def test_tokens_round_trip_and_the_last_page_has_none() -> None:
    assert offset_of("") == 0
    token = next_token(40, 20, more=True)
    assert offset_of(token) == 60
    assert next_token(40, 20, more=False) == ""


@pytest.mark.parametrize(
    "token",
    [
        "not base64!",
        "LTU=",  # -5
        "YWJj",  # abc
        "MTA" * 1000,  # far too long to be ours
        base64.urlsafe_b64encode(str(MAX_OFFSET + 1).encode()).decode(),  # past any list
        base64.urlsafe_b64encode(str(2**63).encode()).decode(),  # past PostgreSQL's bigint
    ],
)
def test_a_bad_token_names_the_field(token: str) -> None:
    with pytest.raises(InvalidArgumentError) as bad:
        offset_of(token)
    assert [v.field for v in bad.value.violations] == ["page_token"]


def test_the_largest_offset_is_still_a_page() -> None:
    assert offset_of(base64.urlsafe_b64encode(str(MAX_OFFSET).encode()).decode()) == MAX_OFFSET


def test_a_page_reads_one_more_item_to_know_whether_another_follows() -> None:
    first = Page.of(SimpleNamespace(page_size=0, page_token=""))
    assert (first.offset, first.size, first.limit) == (0, 20, 21)
    items, token = first.split(list(range(21)))
    assert (list(items), Page.of(SimpleNamespace(page_size=0, page_token=token)).offset) == (
        list(range(20)),
        20,
    )
    last = Page.of(SimpleNamespace(page_size=5, page_token=token))
    assert last.split(list(range(5))) == ([0, 1, 2, 3, 4], ""), "exactly a page left: no token"
