"""`a4co.type.v1.Address` messages to and from plain dicts, as services store them."""

from __future__ import annotations

from a4co.type.v1 import address_pb2

FIELDS = ("street", "locality", "province", "postal_code", "country_code")


def address_dict(message: address_pb2.Address) -> dict[str, str]:
    """The set fields of an address message."""
    return {k: getattr(message, k) for k in FIELDS if getattr(message, k)}


def address_message(fields: dict[str, str]) -> address_pb2.Address:
    """An address message from stored fields (missing ones empty)."""
    return address_pb2.Address(**{k: fields.get(k, "") for k in FIELDS})
