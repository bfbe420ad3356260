"""The order and its saga as a state machine over facts: pure Python, no I/O.

An order records the facts the saga learns (the payment succeeded or failed, the stock was
reserved or not, the points it spends were taken or refused, the customer cancelled, the step
timed out, it shipped, it was delivered, its return was asked for, its goods came back). Its
status is computed from those facts, so the same facts give the same status whatever order they
arrive in, and a fact learnt twice changes nothing.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from services.platform.errors import FailedPreconditionError


class Status(enum.StrEnum):
    """Where an order stands."""

    PENDING = "PENDING"
    PAID = "PAID"
    CONFIRMED = "CONFIRMED"
    SHIPPED = "SHIPPED"
    DELIVERED = "DELIVERED"
    CANCELLED = "CANCELLED"
    RETURN_REQUESTED = "RETURN_REQUESTED"
    RETURNED = "RETURNED"


# The statuses an order may be cancelled in: any before it is shipped.
CANCELLABLE = (Status.PENDING, Status.PAID, Status.CONFIRMED)

# The code of a returned order's `reason` (and of its refund's).
RETURNED_REASON = "RETURNED"
# Why an order not shipped yet is cancelled when its artisan closes their account (decision 55).
ARTISAN_LEFT = "ARTISAN_LEFT"

# What one loyalty point pays off an order (decision 54): 5 cents, so the point earned per euro
# paid gives back 5 %.
POINT_VALUE_CENTS = 5


def points_worth(points: int) -> int:
    """What `points` pay off an order, in cents."""
    return points * POINT_VALUE_CENTS


class NotReturnableError(FailedPreconditionError):
    """An order with a product the law lets its artisan exclude from returns (perishable,
    personalised: decision 53) may not be returned."""

    def __init__(self, order_id: str, product_id: str, exception: str) -> None:
        super().__init__(
            "NOT_RETURNABLE",
            f"order {order_id} may not be returned: product {product_id} is {exception.lower()}",
            metadata={"order_id": order_id, "product_id": product_id, "return_exception": exception},
        )


class ReturnWindowClosedError(FailedPreconditionError):
    """A delivered order's return may be asked for only until its window ends."""

    def __init__(self, order_id: str, ended: datetime) -> None:
        super().__init__(
            "RETURN_WINDOW_CLOSED",
            f"order {order_id} could be returned until {ended.isoformat()}",
            metadata={"order_id": order_id, "return_window_end_time": ended.isoformat()},
        )


class ProductWithdrawnError(FailedPreconditionError):
    """A product its artisan withdrew from sale cannot be ordered any more."""

    def __init__(self, product_id: str) -> None:
        super().__init__(
            "PRODUCT_WITHDRAWN",
            f"product {product_id} was withdrawn from sale",
            metadata={"product_id": product_id},
        )


# The namespace of order ids (a fixed random UUID; changing it would change every new order's id).
_ORDER_IDS = uuid.UUID("5b0c8d9e-3f4a-4e27-9a61-0d2f7c3b8e15")


def order_id_for(customer_id: str, request_id: str) -> str:
    """The id of the order a customer places under a request id: the same for every retry.

    A retry is then found by primary key. The pair's unique index alone cannot be relied on for
    that: until PostgreSQL has statistics for the table, it reads the request through the
    customer's index and filters every earlier order of the customer (decision 20).
    """
    return str(uuid.uuid5(_ORDER_IDS, f"{customer_id}\n{request_id}"))


@dataclass(frozen=True, slots=True)
class ProductInfo:
    """What orders needs of a product: who sells it, its name and price, and whether it was
    withdrawn from sale (then no new order may have it)."""

    product_id: str
    artisan_id: str
    name: str
    price_cents: int
    currency_code: str
    withdrawn: bool = False
    return_exception: str = ""  # why it may not be returned (decision 53); empty when it may


class Outcome(enum.StrEnum):
    """The answer of a saga step."""

    NONE = "none"
    OK = "ok"
    FAILED = "failed"


class CannotChangeError(FailedPreconditionError):
    """The order is not in a state that allows the change."""

    def __init__(self, order_id: str, status: Status, wanted: str) -> None:
        super().__init__(
            "ORDER_STATE_CONFLICT",
            f"order {order_id} is {status.value}; cannot {wanted}",
            metadata={"order_id": order_id, "status": status.value},
        )


@dataclass(frozen=True, slots=True)
class Line:
    """One product of an order, at the price it was sold at."""

    product_id: str
    product_name: str
    quantity: int
    unit_price_cents: int
    return_exception: str = ""  # the product's when ordered: a line with one may not be returned

    @property
    def total_cents(self) -> int:
        """The quantity times the unit price."""
        return self.quantity * self.unit_price_cents


def most_points(lines: Iterable[Line]) -> int:
    """The most points an order of `lines` may spend: they pay for the products, not the
    delivery, so something is always charged (a delivery fee is never 0)."""
    return sum(line.total_cents for line in lines) // POINT_VALUE_CENTS


@dataclass(frozen=True, slots=True)
class Order:
    """A customer's order from one artisan, and what the saga knows of it."""

    order_id: str
    customer_id: str
    artisan_id: str
    lines: tuple[Line, ...]
    delivery_fee_cents: int
    payment_method_id: str
    delivery_address: dict[str, str]
    delivery_lat: float
    delivery_lng: float
    request_id: str
    currency_code: str = "EUR"
    payment: Outcome = Outcome.NONE
    payment_reason: str = ""
    stock: Outcome = Outcome.NONE
    stock_reason: str = ""
    # The loyalty points the customer spends on it (none: 0), and loyalty's answer.
    points_redeemed: int = 0
    points: Outcome = Outcome.NONE
    points_reason: str = ""
    cancel_reason: str = ""
    cancel_note: str = ""  # what whoever cancelled it wrote (CancelOrder's reason), for people
    shipped: bool = False
    delivered: bool = False
    refunded: bool = False
    # When it was delivered (None for an order delivered before this was recorded: its last
    # change stands for it) and its return: asked for, in the customer's words, and received.
    delivered_at: datetime | None = None
    return_requested_at: datetime | None = None
    return_note: str = ""
    returned_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    step_deadline: datetime | None = None
    version: int = 0

    @property
    def subtotal_cents(self) -> int:
        """The sum of the lines."""
        return sum(line.total_cents for line in self.lines)

    @property
    def discount_cents(self) -> int:
        """What its points pay."""
        return points_worth(self.points_redeemed)

    @property
    def total_cents(self) -> int:
        """What is charged: lines plus delivery, less what the points pay."""
        return self.subtotal_cents + self.delivery_fee_cents - self.discount_cents

    @property
    def points_taken(self) -> bool:
        """Whether the points it spends are settled: taken, or none to take."""
        return self.points_redeemed == 0 or self.points is Outcome.OK

    @property
    def status(self) -> Status:
        """The status the facts add up to."""
        if self.cancel_reason:
            return Status.CANCELLED
        if self.returned_at is not None:
            return Status.RETURNED
        if self.return_requested_at is not None:
            return Status.RETURN_REQUESTED
        if self.delivered:
            return Status.DELIVERED
        if self.shipped:
            return Status.SHIPPED
        if Outcome.FAILED in (self.payment, self.stock, self.points):
            return Status.CANCELLED
        if self.payment is Outcome.OK:
            confirmed = self.stock is Outcome.OK and self.points_taken
            return Status.CONFIRMED if confirmed else Status.PAID
        return Status.PENDING

    @property
    def reason(self) -> str:
        """Why the order is cancelled, when it is, or RETURNED once returned."""
        if self.returned_at is not None and not self.cancel_reason:
            return RETURNED_REASON
        if self.cancel_reason:
            return self.cancel_reason
        if self.payment is Outcome.FAILED:
            return self.payment_reason or "PAYMENT_FAILED"
        if self.stock is Outcome.FAILED:
            return self.stock_reason or "OUT_OF_STOCK"
        if self.points is Outcome.FAILED:
            return self.points_reason or "INSUFFICIENT_POINTS"
        return ""

    @property
    def needs_refund(self) -> bool:
        """Charged, cancelled or returned, and not refunded yet: payments must give the money
        back."""
        undone = self.status in (Status.CANCELLED, Status.RETURNED)
        return undone and self.payment is Outcome.OK and not self.refunded

    # Facts. Each returns the order with the fact learnt; learning a fact twice changes nothing.

    def paid(self, ok: bool, reason: str = "") -> Order:
        """The payment's answer."""
        if self.payment is not Outcome.NONE:
            return self
        return replace(self, payment=Outcome.OK if ok else Outcome.FAILED, payment_reason=reason)

    def reserved(self, ok: bool, reason: str = "") -> Order:
        """The stock reservation's answer."""
        if self.stock is not Outcome.NONE:
            return self
        return replace(self, stock=Outcome.OK if ok else Outcome.FAILED, stock_reason=reason)

    def redeemed(self, ok: bool, reason: str = "") -> Order:
        """loyalty's answer: the points were taken from the customer's balance, or refused."""
        if self.points is not Outcome.NONE:
            return self
        return replace(self, points=Outcome.OK if ok else Outcome.FAILED, points_reason=reason)

    def cancelled(self, reason: str, note: str = "") -> Order:
        """Cancel, before shipping (by the customer, an admin, or a timed-out step), for the
        `reason` code; `note`: the words of whoever cancelled it."""
        if self.status is Status.CANCELLED:
            return self
        if self.status not in CANCELLABLE:
            raise CannotChangeError(self.order_id, self.status, "cancel")
        return replace(self, cancel_reason=reason, cancel_note=note)

    def seller_left(self) -> Order:
        """Its artisan closed their account: cancelled (ARTISAN_LEFT) unless it was shipped
        already, for no one is left to ship it."""
        if self.status in CANCELLABLE:
            return self.cancelled(ARTISAN_LEFT)
        return self

    def ship(self) -> Order:
        """The artisan handed a confirmed order to the carrier."""
        if self.status is Status.SHIPPED:
            return self
        if self.status is not Status.CONFIRMED:
            raise CannotChangeError(self.order_id, self.status, "ship")
        return replace(self, shipped=True)

    def deliver(self, now: datetime) -> Order:
        """The customer received a shipped order."""
        if self.delivered:
            return self
        if self.status is not Status.SHIPPED:
            raise CannotChangeError(self.order_id, self.status, "deliver")
        return replace(self, delivered=True, delivered_at=now)

    @property
    def delivery_time(self) -> datetime | None:
        """When it was delivered: its `delivered_at`, or its last change for an order delivered
        before that was recorded; None before delivery."""
        return (self.delivered_at or self.updated_at) if self.delivered else None

    def return_window_end(self, window: timedelta) -> datetime | None:
        """Until when its return may be asked for: `window` after its delivery; None before."""
        delivered = self.delivery_time
        return delivered + window if delivered is not None else None

    def return_requested(self, now: datetime, window: timedelta, note: str = "") -> Order:
        """Its customer asks to return a delivered order, within `window` of its delivery;
        `note`: their words, for the artisan."""
        if self.return_requested_at is not None:
            return self
        if self.status is not Status.DELIVERED:
            raise CannotChangeError(self.order_id, self.status, "return")
        for line in self.lines:
            if line.return_exception:
                raise NotReturnableError(self.order_id, line.product_id, line.return_exception)
        ends = self.return_window_end(window)
        assert ends is not None
        if now >= ends:
            raise ReturnWindowClosedError(self.order_id, ends)
        return replace(self, return_requested_at=now, return_note=note)

    def return_cancelled(self) -> Order:
        """Its customer takes back a return asked for, before the goods came back: the order is
        delivered again, and its return may be asked for again within its window."""
        if self.status is Status.DELIVERED:
            return self
        if self.status is not Status.RETURN_REQUESTED:
            raise CannotChangeError(self.order_id, self.status, "cancel the return")
        return replace(self, return_requested_at=None, return_note="")

    def returned(self, now: datetime) -> Order:
        """The goods of an order whose return was asked for came back to the artisan."""
        if self.returned_at is not None:
            return self
        if self.status is not Status.RETURN_REQUESTED:
            raise CannotChangeError(self.order_id, self.status, "mark returned")
        return replace(self, returned_at=now)

    def refund_done(self) -> Order:
        """Payments gave the money back."""
        return replace(self, refunded=True)


# The codes an order is cancelled for (its `reason`; documented on the Order's cancel_reason in
# orders_service.proto): the payment's refusals, the stock's, the steps timed out, CancelOrder's.
CANCEL_REASONS = (
    "CARD_DECLINED",
    "INSUFFICIENT_FUNDS",
    "PROVIDER_TIMEOUT",
    "UNKNOWN_PAYMENT_METHOD",
    "PAYMENT_FAILED",
    "OUT_OF_STOCK",
    "UNKNOWN_PRODUCT",
    "INSUFFICIENT_POINTS",
    "PAYMENT_TIMEOUT",
    "RESERVATION_TIMEOUT",
    "REDEMPTION_TIMEOUT",
    "CUSTOMER_CANCELLED",
    "ADMIN_CANCELLED",
    ARTISAN_LEFT,
)


def timeout_reason(order: Order) -> str | None:
    """Why an order whose step deadline passed is cancelled, or None if no step is waiting."""
    if order.status is Status.PENDING:
        return "PAYMENT_TIMEOUT"
    if order.status is Status.PAID:
        return "REDEMPTION_TIMEOUT" if order.stock is Outcome.OK else "RESERVATION_TIMEOUT"
    return None


@dataclass(slots=True)
class TimeoutCutoff:
    """Which step deadlines the timeout sweep holds as passed.

    Usually every deadline before now. While orders' own database does not answer, nothing can
    be swept, and the answers the saga waits for wait too, kept by the consumers (decision 32);
    while orders is not connected to NATS, its steps can be neither asked nor answered.
    Once the sweep works again, for `grace` (the longest step timeout) it holds as passed only
    the deadlines before the outage began (its last sweep that worked): a step caught in the
    outage gets a whole timeout to be answered, instead of being cancelled at once for what the
    outage held up.
    """

    grace: timedelta
    last_worked: datetime | None = None
    down_since: datetime | None = None
    held: tuple[datetime, datetime] | None = None  # (deadlines before this, until this)

    def cutoff(self, now: datetime) -> datetime:
        """The sweep at `now` cancels the orders whose step deadline is before this."""
        if self.held is not None and now >= self.held[1] and self.down_since is None:
            self.held = None  # the grace is over
        marks = [now]
        if self.down_since is not None:  # this sweep may be the one that ends the outage
            marks.append(self.down_since)
        if self.held is not None:
            marks.append(self.held[0])
        return min(marks)

    def failed(self, now: datetime) -> None:
        """The sweep at `now` met an outage of the database, or found orders cut off from NATS."""
        if self.down_since is None:
            self.down_since = self.last_worked or now

    def worked(self, now: datetime) -> tuple[datetime, datetime] | None:
        """The sweep at `now` worked; when it ends an outage, the grace it starts (`held`)."""
        self.last_worked = now
        if self.down_since is None:
            return None
        began = self.down_since if self.held is None else min(self.down_since, self.held[0])
        self.held, self.down_since = (began, now + self.grace), None
        return self.held
