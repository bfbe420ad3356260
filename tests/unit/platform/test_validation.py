"""Request validation collects every violation, then fails once."""

from __future__ import annotations

import pytest

from services.platform.errors import InvalidArgumentError
from services.platform.validation import Violations, is_uuid


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
