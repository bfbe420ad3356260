"""Collect every field violation of a request, then fail once with all of them."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from services.platform.errors import FieldViolation, InvalidArgumentError

if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp

# Every string a request carries is bounded, so that what one request makes a service store and
# publish stays small (and far below the size of an event NATS would refuse; decision 29).
MAX_KEY = 100  # characters of an id or key that need not be a UUID: a product's, a workshop's
MAX_TOKEN = 4096  # characters of a token (this API's access tokens are 412 to 416, refresh tokens 80)
MAX_EMAIL = 254  # characters of an e-mail address (RFC 5321's limit on a path)
# What a google.protobuf.Timestamp may hold: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)


def is_uuid(value: str) -> bool:
    """Whether `value` is a UUID in any of its usual spellings."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


class Violations:
    """A list of field violations built by a request validator."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        """Record that `field` is invalid."""
        self.items.append(FieldViolation(field, description))

    def check(self, ok: bool, field: str, description: str) -> bool:
        """Record a violation unless `ok`; returns `ok`."""
        if not ok:
            self.add(field, description)
        return ok

    def required(self, value: object, field: str) -> bool:
        """The field must be set (non-empty)."""
        return self.check(bool(value), field, "is required")

    def uuid(self, value: str, field: str) -> bool:
        """The field must be a UUID (ids and request ids are)."""
        return self.check(is_uuid(value), field, "must be a UUID")

    def filled(self, value: str, field: str, high: int) -> bool:
        """The field must be set, to at most `high` characters."""
        return self.required(value, field) and self.at_most(value, field, high)

    def key(self, value: str, field: str) -> bool:
        """The field must be set, to at most MAX_KEY characters (ids and keys)."""
        if value and len(value) <= MAX_KEY and "\x00" not in value:  # the usual case, at once
            return True
        return self.filled(value, field, MAX_KEY)

    def at_most(self, value: str, field: str, high: int) -> bool:
        """A string may be empty, or up to `high` characters, none of them NUL."""
        if len(value) <= high and "\x00" not in value:  # the usual case, at once
            return True
        if not self.check(len(value) <= high, field, f"must be at most {high} characters"):
            return False
        return self.text(value, field)

    def length(self, value: str, field: str, low: int, high: int) -> bool:
        """A string's length must lie in [low, high], and none of its characters be NUL."""
        if not self.check(low <= len(value) <= high, field, f"must be {low} to {high} characters"):
            return False
        return self.text(value, field)

    def text(self, value: str, field: str) -> bool:
        """No NUL character, which PostgreSQL's text cannot hold (`at_most`, `length`, `filled`
        and `key` check this too)."""
        return self.check("\x00" not in value, field, "must not contain NUL characters")

    def timestamp(self, stamp: Timestamp, field: str) -> bool:
        """A Timestamp within its documented range (protobuf's conversions refuse any other)."""
        low, high = TIMESTAMP_SECONDS
        return self.check(
            low <= stamp.seconds <= high and 0 <= stamp.nanos <= 999_999_999,
            field,
            "must be a time from 0001-01-01 to 9999-12-31 (UTC), nanos 0 to 999,999,999",
        )

    def between(self, value: float, field: str, low: float, high: float) -> bool:
        """A number must lie in [low, high]."""
        return self.check(low <= value <= high, field, f"must be between {low:g} and {high:g}")

    def raise_if_any(self) -> None:
        """Raise InvalidArgumentError naming every violation, if there is one."""
        if self.items:
            raise InvalidArgumentError(list(self.items))
