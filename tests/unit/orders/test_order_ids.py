"""An order's id is derived from its customer and request id, so a retry is found by primary key."""

from __future__ import annotations

import uuid

from services.orders.domain import order_id_for


def test_a_retry_gets_the_same_id() -> None:
    request = "9f5b1e8a-58c4-4c4e-9df4-1a2b3c4d5e6f"
    assert order_id_for("customer-ana", request) == order_id_for("customer-ana", request)


def test_ids_differ_by_customer_and_by_request() -> None:
    request = "9f5b1e8a-58c4-4c4e-9df4-1a2b3c4d5e6f"
    ids = {
        order_id_for("customer-ana", request),
        order_id_for("customer-luis", request),
        order_id_for("customer-ana", "0c7d2b4e-6a1f-4f3e-8b5d-9e2a1c3f4b6d"),
        # The separator keeps a customer id's end from being read as the request's start.
        order_id_for("customer-an", "a\n" + request),
    }
    assert len(ids) == 4


def test_an_id_is_a_uuid() -> None:
    assert uuid.UUID(order_id_for("customer-ana", "r")).version == 5
