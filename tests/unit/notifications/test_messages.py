"""Which order status changes make a message: the subscription's filter and the messages agree."""

from __future__ import annotations

import itertools
from typing import TypeAlias

import pytest

from a4co.orders.events.v1 import order_events_pb2 as orders
from services.notifications.messages import order_status_changed, status_notified

Status: TypeAlias = orders.OrderStatus.ValueType
STATUSES: list[Status] = list(orders.OrderStatus.values())


def changed(previous: Status, status: Status) -> orders.OrderStatusChanged:
    return orders.OrderStatusChanged(
        order_id="o-1", customer_id="c-1", artisan_id="a-1", previous_status=previous, status=status
    )


@pytest.mark.parametrize(("previous", "status"), list(itertools.product(STATUSES, STATUSES)))
def test_a_status_change_is_filtered_in_exactly_when_it_makes_a_message(
    previous: Status, status: Status
) -> None:
    event = changed(previous, status)
    assert status_notified(event) == bool(order_status_changed(event))


def test_the_customer_hears_of_confirmation_and_cancellation_not_payment() -> None:
    pending = orders.ORDER_STATUS_PENDING
    assert status_notified(changed(pending, orders.ORDER_STATUS_CONFIRMED))
    assert status_notified(changed(pending, orders.ORDER_STATUS_CANCELLED))
    assert not status_notified(changed(pending, orders.ORDER_STATUS_PAID))
    assert not status_notified(changed(orders.ORDER_STATUS_CONFIRMED, orders.ORDER_STATUS_CONFIRMED))
