"""Page tokens: opaque, where the page before ended, bound to the list's filters; a bad one is
INVALID_ARGUMENT naming page_token."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from services.platform.errors import InvalidArgumentError
from services.platform.paging import (
    MAX_TOKEN,
    NOT_OURS,
    OTHER_FILTERS,
    After,
    Page,
    after_sql,
    check_page,
    encode,
    page_sql,
)
from services.platform.validation import Violations

KEY = "0b9f7d6e-1c2a-4c3b-8d4e-5f6a7b8c9d0e"
FILTERS = ("orders", 0)


def request(token: str = "", size: int = 0) -> SimpleNamespace:
    return SimpleNamespace(page_size=size, page_token=token)


def items(n: int) -> list[tuple[datetime, str]]:
    """`n` items newest first, each its own position."""
    newest = datetime(2026, 11, 30, 10, 0, 0, 123456, tzinfo=UTC)
    return [(newest - timedelta(seconds=i), str(uuid.UUID(int=i))) for i in range(n)]


def test_a_page_reads_one_more_item_and_the_next_starts_after_its_last() -> None:
    first = Page.of(request(), FILTERS)
    assert (first.after, first.size, first.limit) == (None, 20, 21)
    found = items(21)
    page, token = first.split(found, lambda item: item)
    assert list(page) == found[:20]
    second = Page.of(request(token), FILTERS)
    assert second.after == After(*found[19]), "the time kept to the microsecond, the key as it was"
    last = Page.of(request(token, size=5), FILTERS)
    assert last.split(found[20:25], lambda item: item) == (found[20:25], ""), "exactly a page left: no token"


def test_the_condition_binds_its_values_after_the_others() -> None:
    args: list[object] = ["me", 21]
    assert after_sql(Page.of(request(), FILTERS), "created_at, order_id", args) == ""
    assert args == ["me", 21]
    time, key = items(1)[0]
    after = Page.of(request(encode(Page.of(request(), FILTERS).fingerprint, time, key)), FILTERS)
    assert after_sql(after, "created_at, order_id", args) == " AND (created_at, order_id) < ($3, $4)"
    assert args == ["me", 21, time, key]


def test_a_token_of_other_filters_or_another_list_is_refused_as_such() -> None:
    _, token = Page.of(request(), FILTERS).split(items(21), lambda item: item)
    for other in [("orders", 3), ("notifications", 0)]:
        with pytest.raises(InvalidArgumentError) as refused:
            Page.of(request(token), other)
        assert [(v.field, v.description) for v in refused.value.violations] == [("page_token", OTHER_FILTERS)]


def _raw(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


FINGERPRINT = Page.of(request(), FILTERS).fingerprint


@pytest.mark.parametrize(
    "token",
    [
        "not base64!",
        "YWJj",  # abc
        base64.urlsafe_b64encode(b"60").decode(),  # an offset, as tokens were before decision 41
        _raw({"o": 20, "f": FINGERPRINT}),  # the search's kind
        _raw([FINGERPRINT, 1, KEY, "more"]),
        _raw([FINGERPRINT, "1", KEY]),  # the time not an integer
        _raw([FINGERPRINT, True, KEY]),
        _raw([FINGERPRINT, 1.5, KEY]),
        _raw([FINGERPRINT, 10**20, KEY]),  # past any date
        _raw([FINGERPRINT, -(10**18), KEY]),  # before any date
        _raw([FINGERPRINT, 1, "not a uuid"]),  # would fail in SQL against a uuid column
        _raw([FINGERPRINT, 1, None]),
        _raw([FINGERPRINT, 1, "k" * 101]),
        "x" * (MAX_TOKEN + 1),
    ],
)
def test_a_token_this_api_did_not_make_names_the_field(token: str) -> None:
    with pytest.raises(InvalidArgumentError) as bad:
        Page.of(request(token), FILTERS)
    assert [(v.field, v.description) for v in bad.value.violations] == [("page_token", NOT_OURS)]
    # The request's validator names it too, beside the request's other violations.
    v = Violations()
    check_page(v, request(token, size=500))
    assert [(f.field, f.description) for f in v.items] == [
        ("page_size", "must be between 0 and 100"),
        ("page_token", NOT_OURS),
    ]


def test_the_validator_leaves_a_token_of_other_filters_to_the_list() -> None:
    """Which filters a token belongs to is known to the list alone (`Page.of`)."""
    _, token = Page.of(request(), FILTERS).split(items(21), lambda item: item)
    v = Violations()
    check_page(v, request(token))
    ledger = encode(Page.of(request(), ("ledger", "")).fingerprint, datetime(2026, 1, 1, tzinfo=UTC), "p:o-1")
    check_page(v, request(ledger), uuid_keys=False)
    assert v.items == []
    check_page(v, request(ledger))
    assert [(f.field, f.description) for f in v.items] == [("page_token", NOT_OURS)]


def test_keys_other_than_uuids_are_kept_as_they_are() -> None:
    time = datetime(2026, 1, 1, tzinfo=UTC)
    token = encode(Page.of(request(), ("ledger", "")).fingerprint, time, "purchase:o-1")
    assert Page.of(request(token), ("ledger", ""), uuid_keys=False).after == After(time, "purchase:o-1")
    with pytest.raises(InvalidArgumentError):
        Page.of(request(token), ("ledger", ""))


def test_tokens_are_short_enough_for_the_field() -> None:
    latest = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert len(encode(FINGERPRINT, latest, KEY)) <= 110 < MAX_TOKEN


def test_a_page_orders_by_the_columns_of_its_condition_and_binds_its_limit_last() -> None:
    first: list[object] = ["me"]
    assert (
        page_sql(Page.of(request(size=5), FILTERS), "created_at", "order_id", first)
        == " ORDER BY created_at DESC, order_id DESC LIMIT $2"
    )
    assert first == ["me", 6]
    time, key = items(1)[0]
    token = encode(Page.of(request(), FILTERS).fingerprint, time, key)
    later: list[object] = ["me"]
    assert page_sql(Page.of(request(token), FILTERS), "created_at", "order_id", later) == (
        " AND (created_at, order_id) < ($2, $3) ORDER BY created_at DESC, order_id DESC LIMIT $4"
    )
    assert later == ["me", time, key, 21]
