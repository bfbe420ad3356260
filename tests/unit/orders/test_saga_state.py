"""The order's status comes from facts: any order of arrival and any repetition give the same end."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from services.orders.domain import CannotChangeError, Line, Order, Status

Fact = Callable[[Order], Order]


def order() -> Order:
    return Order(
        order_id="o-1",
        customer_id="c-1",
        artisan_id="a-1",
        lines=(Line("p-1", "Plato", 2, 1000),),
        delivery_fee_cents=250,
        payment_method_id="pm-1",
        delivery_address={},
        delivery_lat=0,
        delivery_lng=0,
        request_id="r-1",
    )


def apply(facts: list[Fact]) -> Order:
    current = order()
    for fact in facts:
        current = fact(current)
    return current


PAID: Fact = lambda o: o.paid(True)  # noqa: E731
DECLINED: Fact = lambda o: o.paid(False, "CARD_DECLINED")  # noqa: E731
RESERVED: Fact = lambda o: o.reserved(True)  # noqa: E731
NO_STOCK: Fact = lambda o: o.reserved(False, "OUT_OF_STOCK")  # noqa: E731
TIMED_OUT: Fact = lambda o: o.cancelled("PAYMENT_TIMEOUT")  # noqa: E731


@pytest.mark.parametrize(
    ("facts", "status", "refund"),
    [
        ([PAID, RESERVED], Status.CONFIRMED, False),
        ([DECLINED], Status.CANCELLED, False),
        ([PAID, NO_STOCK], Status.CANCELLED, True),
        ([TIMED_OUT, PAID], Status.CANCELLED, True),
        ([PAID, RESERVED, TIMED_OUT], Status.CANCELLED, True),
    ],
)
def test_every_order_and_repetition_of_the_facts_ends_the_same(
    facts: list[Fact], status: Status, refund: bool
) -> None:
    for permutation in itertools.permutations(facts + facts):  # each fact twice, in every order
        end = apply(list(permutation))
        assert end.status is status, permutation
        assert end.needs_refund is refund


def test_totals_and_lifecycle() -> None:
    o = apply([PAID, RESERVED])
    assert (o.subtotal_cents, o.total_cents) == (2000, 2250)
    shipped = o.ship()
    assert shipped.status is Status.SHIPPED
    assert shipped.deliver().status is Status.DELIVERED
    with pytest.raises(CannotChangeError):
        shipped.cancelled("CUSTOMER_CANCELLED")
    with pytest.raises(CannotChangeError):
        order().ship()
    assert apply([DECLINED]).reason == "CARD_DECLINED"
