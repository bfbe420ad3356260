"""Page tokens for list RPCs (AIP-158): opaque to clients; underneath, where the page before ended.

Every list is newest first, ordered by a time and then a key (both descending). A token holds the
time and key of the last item of the page before, and the next page reads the items after it
(keyset paging, decision 41): an item added, changed or gone meanwhile neither repeats nor skips
another, as it did when a token was an offset. A token also holds a short hash of the request's
other fields that choose the items (the filters), so a token used with other filters is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, Self, TypeVar

from services.platform.errors import FieldViolation, InvalidArgumentError
from services.platform.timestamps import EPOCH
from services.platform.validation import Violations

# This module's tokens are 80 to 110 characters (a uuid key: 108); a longer one is not ours.
MAX_TOKEN = 200
MAX_KEY = 100  # characters of an item's key in a token (a uuid's 36; loyalty's entry keys ≤ 50)
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20  # a request's page_size when unset
MICROSECOND = timedelta(microseconds=1)
T = TypeVar("T")

NOT_OURS = "is not a token from this API"
OTHER_FILTERS = "belongs to a list with other filters; start again without a token"


class ListRequest(Protocol):
    """A list RPC's request: how many items, from where."""

    page_size: int
    page_token: str


@dataclass(frozen=True, slots=True)
class After:
    """Where the page before ended: its last item's time and key. A list reads the items that
    come after it, newest first: `(time, key) < (after.time, after.key)` in SQL."""

    time: datetime
    key: str


def check_page(v: Violations, request: ListRequest, uuid_keys: bool = True) -> None:
    """A list request's page: at most 100 items, and a page token this API made (`uuid_keys`: the
    list's keys are uuids, as `Page.of`'s), named beside the request's other violations. Whether
    the token belongs to a list with the request's filters is for `Page.of`."""
    v.between(request.page_size, "page_size", 0, MAX_PAGE_SIZE)
    if request.page_token:
        v.check(_position_of(request.page_token, uuid_keys) is not None, "page_token", NOT_OURS)


def check_list(request: ListRequest) -> None:
    """The validator of a list RPC whose request holds only its page (`check_page`)."""
    v = Violations()
    check_page(v, request)
    v.raise_if_any()


def fingerprint(filters: object) -> str:
    """A short hash of a request's values that choose its items (JSON-able, or made text): a page
    token holds it, and is refused with other values."""
    return hashlib.sha256(json.dumps(filters, sort_keys=True, default=str).encode()).hexdigest()[:12]


def pack(data: object) -> str:
    """An opaque token of JSON-able data: the base64url of its compact JSON, unpadded (this API's
    lists' and searches' tokens alike)."""
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def unpack(token: str) -> Any:
    """The data of a `pack`ed token; ValueError (json's, base64's and UTF-8's errors are) when it
    is not one."""
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


def _micros(time: datetime) -> int:
    return (time - EPOCH) // MICROSECOND


def encode(fingerprint: str, time: datetime, key: str) -> str:
    """The token of the page after the item at (`time`, `key`) of a list with these filters."""
    return pack([fingerprint, _micros(time), key])


def _position_of(token: str, uuid_keys: bool) -> tuple[str, After] | None:
    """A token's fingerprint and where its page starts; None for a token this API did not make
    (too long, bad encoding, a time out of range, a key of the wrong kind)."""
    if len(token) > MAX_TOKEN:
        return None
    try:
        found, micros, key = unpack(token)
        if not (
            isinstance(found, str) and type(micros) is int and isinstance(key, str) and len(key) <= MAX_KEY
        ):
            return None
        time = EPOCH + micros * MICROSECOND
        if uuid_keys:
            key = str(uuid.UUID(key))
    except (ValueError, TypeError, OverflowError):  # json's and base64's errors are ValueErrors
        return None
    return found, After(time, key)


def decode(token: str, fingerprint: str, uuid_keys: bool) -> After:
    """Where a token's page starts; INVALID_ARGUMENT naming page_token for a token this API did
    not make or for another list's."""
    position = _position_of(token, uuid_keys)
    if position is None:
        raise InvalidArgumentError([FieldViolation("page_token", NOT_OURS)])
    found, after = position
    if found != fingerprint:
        raise InvalidArgumentError([FieldViolation("page_token", OTHER_FILTERS)])
    return after


@dataclass(frozen=True, slots=True)
class Page:
    """The page a list request asks for: after which item it starts (None: the first page) and how
    many items it holds. A list reads `limit` items, one more than the page, to learn whether
    another page follows (`split`)."""

    after: After | None
    size: int
    fingerprint: str

    @classmethod
    def of(cls, request: ListRequest, filters: Sequence[object], uuid_keys: bool = True) -> Self:
        """The page of a request checked by `check_page`. `filters`: the list's name and the
        request's values that choose its items (a token is refused with other ones); `uuid_keys`:
        whether the list's keys are uuids (a token's key is checked before it reaches SQL)."""
        hashed = fingerprint(list(filters))
        after = decode(request.page_token, hashed, uuid_keys) if request.page_token else None
        return cls(after, request.page_size or DEFAULT_PAGE_SIZE, hashed)

    @property
    def limit(self) -> int:
        """How many items to read."""
        return self.size + 1

    def split(
        self, found: Sequence[T], position: Callable[[T], tuple[datetime, str]]
    ) -> tuple[Sequence[T], str]:
        """The page's items of the `limit` read, and the next page's token ('' on the last),
        made from the position (time, key) of the page's last item."""
        items = found[: self.size]
        if len(found) <= self.size:
            return items, ""
        return items, encode(self.fingerprint, *position(items[-1]))


def after_sql(page: Page, columns: str, args: list[object]) -> str:
    """The SQL condition of the items after the page before (`columns`: the list's time and key
    columns, as in its ORDER BY, both descending), its two values appended to `args`; '' on the
    first page. With an index on (owner, time DESC, key DESC) a page costs the same however deep."""
    if page.after is None:
        return ""
    args += [page.after.time, page.after.key]
    return f" AND ({columns}) < (${len(args) - 1}, ${len(args)})"


def page_sql(page: Page, time_column: str, key_column: str, args: list[object]) -> str:
    """What follows a list's own WHERE conditions: the items after the page before (`after_sql`),
    newest first by time and key, `page.limit` of them; the values appended to `args`. The order
    and the condition name the same columns, as keyset paging needs."""
    condition = after_sql(page, f"{time_column}, {key_column}", args)
    args.append(page.limit)
    return f"{condition} ORDER BY {time_column} DESC, {key_column} DESC LIMIT ${len(args)}"
