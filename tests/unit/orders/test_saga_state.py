"""The order's status comes from facts: any order of arrival and any repetition give the same end."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.orders.domain import (
    CannotChangeError,
    Line,
    NotReturnableError,
    Order,
    ReturnWindowClosedError,
    Status,
    most_points,
    timeout_reason,
)

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
    assert shipped.deliver(NOW).status is Status.DELIVERED
    with pytest.raises(CannotChangeError):
        shipped.cancelled("CUSTOMER_CANCELLED")
    with pytest.raises(CannotChangeError):
        order().ship()
    assert apply([DECLINED]).reason == "CARD_DECLINED"


NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
WINDOW = timedelta(days=14)


def delivered() -> Order:
    return apply([PAID, RESERVED]).ship().deliver(NOW)


def test_a_delivered_order_is_returned_within_its_window_and_then_refunded() -> None:
    d = delivered()
    assert d.return_window_end(WINDOW) == NOW + WINDOW
    assert apply([PAID, RESERVED]).return_window_end(WINDOW) is None
    asked = d.return_requested(NOW + WINDOW - timedelta(seconds=1), WINDOW, "no es el tamaño")
    assert (asked.status, asked.return_note, asked.needs_refund) == (
        Status.RETURN_REQUESTED,
        "no es el tamaño",
        False,
    )
    assert asked.return_requested(NOW + 2 * WINDOW, WINDOW, "otra vez") == asked, (
        "asking again changes nothing"
    )
    back = asked.returned(NOW + WINDOW)
    assert (back.status, back.reason, back.needs_refund) == (Status.RETURNED, "RETURNED", True)
    assert back.returned(NOW + 2 * WINDOW) == back
    assert back.refund_done().needs_refund is False
    assert back.refund_done().status is Status.RETURNED
    # Saga answers learnt again (a redelivery) change nothing of it.
    assert PAID(RESERVED(back)) == back


def test_a_return_is_refused_outside_its_window_and_before_delivery() -> None:
    with pytest.raises(ReturnWindowClosedError) as closed:
        delivered().return_requested(NOW + WINDOW, WINDOW)
    assert closed.value.metadata["return_window_end_time"] == (NOW + WINDOW).isoformat()
    shipped = apply([PAID, RESERVED]).ship()
    for early in (shipped, apply([PAID, RESERVED]), apply([DECLINED])):
        with pytest.raises(CannotChangeError):
            early.return_requested(NOW, WINDOW)
    with pytest.raises(CannotChangeError):
        delivered().returned(NOW)  # no return asked for
    asked = delivered().return_requested(NOW, WINDOW)
    back = asked.returned(NOW)
    changes: list[Fact] = [lambda o: o.cancelled("CUSTOMER_CANCELLED"), lambda o: o.ship()]
    for change in changes:
        with pytest.raises(CannotChangeError):
            change(back)
    assert back.deliver(NOW + WINDOW) == back, "delivered again: nothing changes"
    with pytest.raises(CannotChangeError):
        asked.cancelled("CUSTOMER_CANCELLED")


def test_an_order_delivered_before_its_delivery_time_was_kept_counts_from_its_last_change() -> None:
    legacy = replace(delivered(), delivered_at=None, updated_at=NOW - WINDOW)
    assert legacy.return_window_end(WINDOW) == NOW
    with pytest.raises(ReturnWindowClosedError):
        legacy.return_requested(NOW, WINDOW)


def test_a_return_taken_back_leaves_the_order_delivered_and_may_be_asked_again_within_its_window() -> None:
    asked = delivered().return_requested(NOW, WINDOW, "me equivoqué")
    back = asked.return_cancelled()
    assert (back.status, back.return_note, back.return_requested_at) == (Status.DELIVERED, "", None)
    assert back.return_cancelled() == back, "taking it back twice changes nothing"
    again = back.return_requested(NOW + WINDOW - timedelta(seconds=1), WINDOW, "ahora sí")
    assert (again.status, again.return_note) == (Status.RETURN_REQUESTED, "ahora sí")
    with pytest.raises(ReturnWindowClosedError):
        back.return_requested(NOW + WINDOW, WINDOW)
    with pytest.raises(CannotChangeError):
        again.returned(NOW).return_cancelled()  # the goods came back
    with pytest.raises(CannotChangeError):
        apply([PAID, RESERVED]).return_cancelled()


def test_an_order_with_a_line_excluded_from_returns_may_not_be_returned() -> None:
    cheese = Line("p-2", "Queso fresco", 1, 650, "PERISHABLE")
    mixed = replace(delivered(), lines=(*delivered().lines, cheese))
    with pytest.raises(NotReturnableError) as refused:
        mixed.return_requested(NOW, WINDOW)
    assert refused.value.metadata == {
        "order_id": "o-1",
        "product_id": "p-2",
        "return_exception": "PERISHABLE",
    }
    with pytest.raises(NotReturnableError):  # whatever the window
        mixed.return_requested(NOW + 2 * WINDOW, WINDOW)


REDEEMED: Fact = lambda o: o.redeemed(True)  # noqa: E731
TOO_FEW_POINTS: Fact = lambda o: o.redeemed(False, "INSUFFICIENT_POINTS")  # noqa: E731


def spending(points: int, facts: list[Fact]) -> Order:
    current = replace(order(), points_redeemed=points)
    for fact in facts:
        current = fact(current)
    return current


@pytest.mark.parametrize(
    ("facts", "status", "reason", "refund"),
    [
        ([PAID, RESERVED, REDEEMED], Status.CONFIRMED, "", False),
        ([PAID, RESERVED], Status.PAID, "", False),  # waits for the points
        ([REDEEMED], Status.PENDING, "", False),  # the points may come before the payment
        ([PAID, RESERVED, TOO_FEW_POINTS], Status.CANCELLED, "INSUFFICIENT_POINTS", True),
        ([TOO_FEW_POINTS, PAID], Status.CANCELLED, "INSUFFICIENT_POINTS", True),
        ([TOO_FEW_POINTS, DECLINED], Status.CANCELLED, "CARD_DECLINED", False),
    ],
)
def test_an_order_that_spends_points_is_confirmed_only_once_they_are_taken(
    facts: list[Fact], status: Status, reason: str, refund: bool
) -> None:
    for permutation in itertools.permutations(facts + facts):
        end = spending(100, list(permutation))
        assert (end.status, end.reason, end.needs_refund) == (status, reason, refund), permutation


def test_the_points_are_taken_off_the_total() -> None:
    o = spending(100, [])
    assert (o.subtotal_cents, o.discount_cents, o.total_cents) == (2000, 500, 1750)
    assert order().discount_cents == 0
    assert most_points(o.lines) == 400  # the products' 20.00 €, not the delivery


def test_a_step_that_does_not_answer_times_out_for_its_own_reason() -> None:
    assert timeout_reason(spending(100, [])) == "PAYMENT_TIMEOUT"
    assert timeout_reason(spending(100, [REDEEMED])) == "PAYMENT_TIMEOUT"
    assert timeout_reason(spending(100, [PAID])) == "RESERVATION_TIMEOUT"
    assert timeout_reason(spending(100, [PAID, RESERVED])) == "REDEMPTION_TIMEOUT"
    assert timeout_reason(spending(100, [PAID, RESERVED, REDEEMED])) is None


def test_an_artisan_who_leaves_cancels_only_what_is_not_shipped() -> None:
    for facts in ([], [PAID], [PAID, RESERVED]):
        left = apply(facts).seller_left()
        assert (left.status, left.reason) == (Status.CANCELLED, "ARTISAN_LEFT"), facts
    assert apply([PAID]).seller_left().needs_refund
    for kept in (apply([PAID, RESERVED]).ship(), delivered(), apply([DECLINED])):
        assert kept.seller_left() == kept
