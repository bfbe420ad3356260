"""Postal addresses between the `a4co.type.v1.Address` message and the JSON stored for it."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Protocol

from a4co.type.v1 import address_pb2
from services.platform.validation import Violations

FIELDS = ("street", "locality", "province", "postal_code", "country_code")
# The longest each part may be, in characters; the country code is two letters (ISO 3166-1).
LIMITS = {"street": 200, "locality": 80, "province": 80, "postal_code": 10}


class AddressLike(Protocol):
    """An address message, or anything else with its five parts."""

    @property
    def street(self) -> str: ...
    @property
    def locality(self) -> str: ...
    @property
    def province(self) -> str: ...
    @property
    def postal_code(self) -> str: ...
    @property
    def country_code(self) -> str: ...


def check_address(v: Violations, address: AddressLike, field: str, *, required: Collection[str] = ()) -> None:
    """Record what is wrong with an address under `field` (for example `delivery_address.street`):
    a part named in `required` left blank, a part too long, a country that is not a code."""
    for name, high in LIMITS.items():
        value = getattr(address, name)
        if name in required and not v.required(value.strip(), f"{field}.{name}"):
            continue
        v.at_most(value, f"{field}.{name}", high)
    code = address.country_code
    if code or "country_code" in required:
        v.check(
            len(code) == 2 and code.isascii() and code.isalpha() and code.isupper(),
            f"{field}.country_code",
            "must be an ISO 3166-1 alpha-2 code, such as ES",
        )


def address_to_dict(message: address_pb2.Address) -> dict[str, str]:
    """The address's set fields, as stored (empty ones are left out)."""
    return {k: value for k in FIELDS if (value := getattr(message, k))}


def address_from_dict(stored: Mapping[str, str]) -> address_pb2.Address:
    """A stored address as a message (missing fields are empty)."""
    return address_pb2.Address(**{k: stored.get(k, "") for k in FIELDS})
