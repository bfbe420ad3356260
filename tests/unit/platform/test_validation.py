"""Request validation collects every violation, then fails once."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from a4co.type.v1 import address_pb2
from services.platform.addresses import check_address
from services.platform.errors import InvalidArgumentError
from services.platform.validation import MAX_KEY, Violations, is_uuid


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3c8f8e4e-52c2-4a8f-8d1f-6b4b8d7b9a01", True),
        ("3C8F8E4E52C24A8F8D1F6B4B8D7B9A01", True),
        ("", False),
        ("3c8f8e4e-52c2-4a8f-8d1f", False),
        ("not-a-uuid", False),
    ],
)
def test_is_uuid(value: str, expected: bool) -> None:
    assert is_uuid(value) is expected


def test_every_violation_is_reported_at_once() -> None:
    v = Violations()
    v.uuid("nope", "request_id")
    v.required("", "name")
    v.uuid("3c8f8e4e-52c2-4a8f-8d1f-6b4b8d7b9a01", "order_id")
    with pytest.raises(InvalidArgumentError) as caught:
        v.raise_if_any()
    assert [(f.field, f.description) for f in caught.value.violations] == [
        ("request_id", "must be a UUID"),
        ("name", "is required"),
    ]


def test_keys_and_bounded_text_are_named_when_missing_or_too_long() -> None:
    v = Violations()
    assert v.key("p-1", "product_id")
    assert not v.key("", "order_id")
    assert not v.key("x" * (MAX_KEY + 1), "artisan_id")
    assert v.key("x" * MAX_KEY, "user_id")
    assert v.at_most("", "tracking_code", 100)
    assert not v.at_most("x" * 101, "tracking_code", 100)
    assert not v.filled("", "card.cvc", 64)
    assert not v.filled("1" * 65, "card.number", 64)
    assert [(f.field, f.description) for f in v.items] == [
        ("order_id", "is required"),
        ("artisan_id", f"must be at most {MAX_KEY} characters"),
        ("tracking_code", "must be at most 100 characters"),
        ("card.cvc", "is required"),
        ("card.number", "must be at most 64 characters"),
    ]


def test_an_address_is_checked_part_by_part_under_its_field() -> None:
    v = Violations()
    check_address(v, address_pb2.Address(street="Calle Real 1", locality="Baeza", country_code="ES"), "a")
    check_address(v, address_pb2.Address(), "empty")  # every part is optional unless required
    assert v.items == []

    check_address(
        v,
        address_pb2.Address(
            street="x" * 201, province="x" * 81, postal_code="23400-00000", country_code="España"
        ),
        "delivery_address",
        required=("street", "locality"),
    )
    check_address(v, address_pb2.Address(locality="x" * 81, country_code="es"), "user.address")
    assert [(f.field, f.description) for f in v.items] == [
        ("delivery_address.street", "must be at most 200 characters"),
        ("delivery_address.locality", "is required"),
        ("delivery_address.province", "must be at most 80 characters"),
        ("delivery_address.postal_code", "must be at most 10 characters"),
        ("delivery_address.country_code", "must be an ISO 3166-1 alpha-2 code, such as ES"),
        ("user.address.locality", "must be at most 80 characters"),
        ("user.address.country_code", "must be an ISO 3166-1 alpha-2 code, such as ES"),
    ]
    blank = Violations()
    check_address(blank, address_pb2.Address(street="   ", locality="Baeza"), "a", required=("street",))
    assert [f.field for f in blank.items] == ["a.street"], "blanks do not fill a required part"


def test_a_nul_is_refused_by_every_bound_on_text() -> None:
    v = Violations()
    assert not v.text("a\x00b", "note")
    assert not v.at_most("a\x00b", "tracking_code", 100)
    assert not v.length("a\x00b", "name", 3, 120)
    assert not v.key("p-\x00", "product_id")
    assert v.text("añ ✓", "ok")
    assert [(f.field, f.description) for f in v.items] == [
        (field, "must not contain NUL characters")
        for field in ("note", "tracking_code", "name", "product_id")
    ]


def test_a_timestamp_must_lie_in_the_range_protobuf_converts() -> None:
    v = Violations()
    assert v.timestamp(Timestamp(), "epoch")
    assert v.timestamp(Timestamp(seconds=-62_135_596_800), "year 1")
    assert v.timestamp(Timestamp(seconds=253_402_300_799, nanos=999_999_999), "year 9999")
    assert not v.timestamp(Timestamp(seconds=253_402_300_800), "past")
    assert not v.timestamp(Timestamp(seconds=-62_135_596_801), "before")
    assert not v.timestamp(Timestamp(seconds=1, nanos=-1), "nanos")
    assert not v.timestamp(Timestamp(seconds=1, nanos=1_000_000_000), "too many nanos")
    assert [f.field for f in v.items] == ["past", "before", "nanos", "too many nanos"]
