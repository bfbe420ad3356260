"""Page tokens for list RPCs (AIP-158): opaque to clients, an offset underneath."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, Self, TypeVar

from services.platform.errors import FieldViolation, InvalidArgumentError
from services.platform.validation import Violations

# This module's tokens are the base64 of a decimal offset: 4 characters for 20, 16 for 10¹¹.
MAX_TOKEN = 40
# No list holds a billion items; a larger offset, which a client can write (the format is no
# secret), overflowed PostgreSQL's OFFSET past 2⁶³ - 1 and failed the call with INTERNAL.
MAX_OFFSET = 1_000_000_000
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20  # a request's page_size when unset
T = TypeVar("T")


class ListRequest(Protocol):
    """A list RPC's request: how many items, from where."""

    page_size: int
    page_token: str


def check_page(v: Violations, request: ListRequest) -> None:
    """A list request's page: at most 100 items, and a page token no longer than this API's (what
    the token says is read by `offset_of`)."""
    v.between(request.page_size, "page_size", 0, MAX_PAGE_SIZE)
    v.at_most(request.page_token, "page_token", MAX_TOKEN)


def check_list(request: ListRequest) -> None:
    """The validator of a list RPC whose request holds only its page (`check_page`)."""
    v = Violations()
    check_page(v, request)
    v.raise_if_any()


def offset_of(token: str) -> int:
    """Where the page of `token` starts; 0 for the first page, INVALID_ARGUMENT for a bad token."""
    if not token:
        return 0
    if len(token) > MAX_TOKEN:
        raise InvalidArgumentError([FieldViolation("page_token", "is not a token from this API")])
    try:
        offset = int(base64.urlsafe_b64decode(token.encode()).decode())
    except ValueError:
        raise InvalidArgumentError([FieldViolation("page_token", "is not a token from this API")]) from None
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidArgumentError([FieldViolation("page_token", "is not a token from this API")])
    return offset


def next_token(offset: int, size: int, more: bool) -> str:
    """The token of the page after this one, or '' on the last page."""
    return base64.urlsafe_b64encode(str(offset + size).encode()).decode() if more else ""


@dataclass(frozen=True, slots=True)
class Page:
    """The page a list request asks for: where it starts, how many items it holds. A list reads
    `limit` items, one more than the page, to learn whether another page follows (`split`)."""

    offset: int
    size: int

    @classmethod
    def of(cls, request: ListRequest) -> Self:
        """The page of a request checked by `check_page`; INVALID_ARGUMENT for a bad token."""
        return cls(offset_of(request.page_token), request.page_size or DEFAULT_PAGE_SIZE)

    @property
    def limit(self) -> int:
        """How many items to read."""
        return self.size + 1

    def split(self, found: Sequence[T]) -> tuple[Sequence[T], str]:
        """The page's items of the `limit` read, and the next page's token ('' on the last)."""
        return found[: self.size], next_token(self.offset, self.size, len(found) > self.size)
