"""loyalty's use cases and event handlers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from a4co.identity.events.v1 import identity_events_pb2 as identity_events
from a4co.loyalty.events.v1 import loyalty_events_pb2 as loyalty_events
from a4co.orders.events.v1 import order_events_pb2 as order_events
from a4co.payments.events.v1 import payment_events_pb2 as payment_events
from services.loyalty.domain import WELCOME_POINTS, purchase_points
from services.platform.auth import Principal
from services.platform.db import Connection, columns
from services.platform.events.consumer import HandlerContext
from services.platform.paging import Page, page_sql
from services.platform.timestamps import to_timestamp


@dataclass(frozen=True, slots=True)
class Deps:
    """What the use cases are built with."""

    pool: asyncpg.Pool


@dataclass(frozen=True, slots=True)
class Balance:
    """A user's points."""

    user_id: str
    points: int
    lifetime_points: int
    entries: int
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class _Entry:
    """A ledger entry to write. A revocation's points are None until the writer knows what the
    purchase it takes back earned; `cents` is what the refund was worth."""

    key: str
    user_id: str
    points: int | None
    kind: str
    order_id: str = ""
    cents: int = 0


async def _write(conn: Connection, entries: list[_Entry]) -> None:
    """Write a transaction's entries with one statement, in their events' order (a staged writer:
    HandlerContext.stage). A revocation takes back what its purchase earned: written before it in
    this batch, or earlier; when the purchase has not arrived yet (reordering), what the refund is
    worth."""
    earned = {e.key: e.points for e in entries if e.kind == "purchase"}
    asked = [
        f"purchase:{e.order_id}"
        for e in entries
        if e.points is None and f"purchase:{e.order_id}" not in earned
    ]
    if asked:
        rows = await conn.fetch(
            "SELECT entry_key, points FROM entries WHERE entry_key = ANY($1::text[])", asked
        )
        earned |= {r["entry_key"]: int(r["points"]) for r in rows}
    written: dict[str, tuple[str, str, int, str]] = {}
    for e in entries:
        points = e.points
        if points is None:
            purchase = earned.get(f"purchase:{e.order_id}")
            points = -(purchase if purchase is not None else purchase_points(e.cents))
        written.setdefault(e.key, (e.user_id, e.order_id, points, e.kind))  # one entry per cause
    await conn.execute(
        "INSERT INTO entries (entry_key, user_id, order_id, points, kind)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[])"
        " ON CONFLICT (entry_key) DO NOTHING",
        *columns(((key, *rest) for key, rest in written.items()), 5),
    )


async def on_user_registered(deps: Deps, event: identity_events.UserRegistered, ctx: HandlerContext) -> None:
    """A welcome bonus for every new customer."""
    if event.role == identity_events.USER_ROLE_CUSTOMER:
        ctx.stage(_write, _Entry(f"welcome:{event.user_id}", event.user_id, WELCOME_POINTS, "welcome"))


async def on_payment_processed(
    deps: Deps, event: payment_events.PaymentProcessed, ctx: HandlerContext
) -> None:
    """Points per euro paid."""
    points = purchase_points(event.amount.amount_cents)
    ctx.stage(
        _write, _Entry(f"purchase:{event.order_id}", event.customer_id, points, "purchase", event.order_id)
    )


async def on_refund_issued(deps: Deps, event: payment_events.RefundIssued, ctx: HandlerContext) -> None:
    """A refund takes back the points its payment earned."""
    ctx.stage(
        _write,
        _Entry(
            f"revocation:{event.order_id}",
            event.customer_id,
            None,
            "revocation",
            event.order_id,
            event.amount.amount_cents,
        ),
    )


# Redemptions (decision 54) ---------------------------------------------------------------------


def spends_points(event: order_events.OrderCreated) -> bool:
    """The only orders loyalty hears of: those that spend points."""
    return event.points_redeemed > 0


_UNDONE = (order_events.ORDER_STATUS_CANCELLED, order_events.ORDER_STATUS_RETURNED)


def gives_points_back(event: order_events.OrderStatusChanged) -> bool:
    """The only status changes loyalty hears of: an order that spends points, cancelled or
    returned."""
    return event.points_redeemed > 0 and event.status in _UNDONE


@dataclass(frozen=True, slots=True)
class _Spend:
    """An order's points to take, or (`undo`) to give back, in turn with its transaction's."""

    ctx: HandlerContext
    order_id: str
    user_id: str
    points: int
    undo: bool


async def on_order_created(deps: Deps, event: order_events.OrderCreated, ctx: HandlerContext) -> None:
    """Take the points an order spends from its customer's balance, or refuse them."""
    ctx.stage(_spend_all, _Spend(ctx, event.order_id, event.customer_id, event.points_redeemed, undo=False))


async def on_order_status_changed(
    deps: Deps, event: order_events.OrderStatusChanged, ctx: HandlerContext
) -> None:
    """Give back the points a cancelled or returned order took."""
    ctx.stage(_spend_all, _Spend(ctx, event.order_id, event.customer_id, event.points_redeemed, undo=True))


async def _spend_all(conn: Connection, batch: list[_Spend]) -> None:
    """Settle a transaction's redemptions in the order their events came, each once.

    The customers' balances are locked first (an advisory lock per customer, taken in one order so
    that two transactions cannot deadlock), so that two orders cannot spend the same points. An
    order's redemption is 'redeemed' or 'refused' once; a redeemed one is 'restored' once when the
    order is undone. An undoing that overtook its order (a redelivery) leaves the order 'void':
    its points are never taken.
    """
    users = sorted({s.user_id for s in batch})
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('a4co.loyalty:' || u, 0))"
        " FROM unnest($1::text[]) AS u",
        users,
    )
    rows = await conn.fetch(
        "SELECT order_id, status FROM redemptions WHERE order_id = ANY($1::text[])",
        list({s.order_id for s in batch}),
    )
    state: dict[str, str] = {r["order_id"]: r["status"] for r in rows}
    balances = {
        r["user_id"]: int(r["points"])
        for r in await conn.fetch(
            "SELECT user_id, sum(points) AS points FROM entries WHERE user_id = ANY($1::text[])"
            " GROUP BY user_id",
            users,
        )
    }
    changed: dict[str, tuple[str, int, str]] = {}
    entries: list[_Entry] = []
    now = datetime.now(UTC)
    for s in batch:
        before = state.get(s.order_id)
        balance = balances.get(s.user_id, 0)
        if s.undo:
            if before is None:
                after = "void"
            elif before == "redeemed":
                after = "restored"
                entries.append(
                    _Entry(f"restoration:{s.order_id}", s.user_id, s.points, "restoration", s.order_id)
                )
                balances[s.user_id] = balance + s.points
            else:
                continue
        elif before is not None:
            continue  # decided before, or undone before it came
        elif balance >= s.points:
            after = "redeemed"
            entries.append(_Entry(f"redemption:{s.order_id}", s.user_id, -s.points, "redemption", s.order_id))
            balances[s.user_id] = balance - s.points
            await s.ctx.publish(
                loyalty_events.PointsRedeemed(
                    order_id=s.order_id,
                    customer_id=s.user_id,
                    points=s.points,
                    balance=balance - s.points,
                    redeem_time=to_timestamp(now),
                ),
                aggregate_id=s.order_id,
            )
        else:
            after = "refused"
            await s.ctx.publish(
                loyalty_events.PointsRedemptionFailed(
                    order_id=s.order_id,
                    customer_id=s.user_id,
                    reason="INSUFFICIENT_POINTS",
                    points=s.points,
                    balance=balance,
                    fail_time=to_timestamp(now),
                ),
                aggregate_id=s.order_id,
            )
        state[s.order_id] = after
        changed[s.order_id] = (s.user_id, s.points, after)
    if changed:
        await conn.execute(
            "INSERT INTO redemptions (order_id, user_id, points, status)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[])"
            " ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, updated_at = now()",
            *columns(((order_id, *rest) for order_id, rest in changed.items()), 4),
        )
    if entries:
        await _write(conn, entries)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One change of a user's points, as written."""

    kind: str
    points: int
    order_id: str
    created_at: datetime
    key: str  # its cause, unique: where it stands among entries written at once


async def ledger(deps: Deps, principal: Principal, user_id: str, page: Page) -> list[LedgerEntry]:
    """A page of a user's entries, newest first, for that user or an admin."""
    target = user_id or principal.user_id
    principal.require_self_or_admin(target)
    args: list[object] = [target]
    rest = page_sql(page, "created_at", "entry_key", args)
    rows = await deps.pool.fetch(
        f"SELECT kind, points, order_id, created_at, entry_key FROM entries WHERE user_id = $1{rest}",  # noqa: S608 (values bound)
        *args,
    )
    return [
        LedgerEntry(r["kind"], int(r["points"]), r["order_id"], r["created_at"], r["entry_key"]) for r in rows
    ]


async def balance(deps: Deps, principal: Principal, user_id: str) -> Balance:
    """A user's points, for that user or an admin."""
    target = user_id or principal.user_id
    principal.require_self_or_admin(target)
    row = await deps.pool.fetchrow(
        "SELECT coalesce(sum(points), 0) AS points,"
        " coalesce(sum(points) FILTER (WHERE kind IN ('welcome', 'purchase')), 0) AS lifetime,"
        " count(*) AS entries, max(created_at) AS updated FROM entries WHERE user_id = $1",
        target,
    )
    assert row is not None
    return Balance(target, int(row["points"]), int(row["lifetime"]), int(row["entries"]), row["updated"])
