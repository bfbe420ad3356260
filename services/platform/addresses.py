"""Postal addresses between the `a4co.type.v1.Address` message and the JSON stored for it."""

from __future__ import annotations

from collections.abc import Mapping

from a4co.type.v1 import address_pb2

FIELDS = ("street", "locality", "province", "postal_code", "country_code")


def address_to_dict(message: address_pb2.Address) -> dict[str, str]:
    """The address's set fields, as stored (empty ones are left out)."""
    return {k: value for k in FIELDS if (value := getattr(message, k))}


def address_from_dict(stored: Mapping[str, str]) -> address_pb2.Address:
    """A stored address as a message (missing fields are empty)."""
    return address_pb2.Address(**{k: stored.get(k, "") for k in FIELDS})
