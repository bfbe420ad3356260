"""loyalty's use cases and event handlers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from a4co.identity.events.v1 import identity_events_pb2 as identity_events
from a4co.payments.events.v1 import payment_events_pb2 as payment_events
from services.loyalty.domain import WELCOME_POINTS, purchase_points
from services.platform.auth import Principal
from services.platform.db import Connection
from services.platform.events.consumer import HandlerContext


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


async def _add(conn: Connection, key: str, user_id: str, points: int, kind: str, order_id: str = "") -> None:
    await conn.execute(
        "INSERT INTO entries (entry_key, user_id, order_id, points, kind) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (entry_key) DO NOTHING",
        key,
        user_id,
        order_id,
        points,
        kind,
    )


async def on_user_registered(deps: Deps, event: identity_events.UserRegistered, ctx: HandlerContext) -> None:
    """A welcome bonus for every new customer."""
    if event.role == identity_events.USER_ROLE_CUSTOMER:
        await _add(ctx.conn, f"welcome:{event.user_id}", event.user_id, WELCOME_POINTS, "welcome")


async def on_payment_processed(
    deps: Deps, event: payment_events.PaymentProcessed, ctx: HandlerContext
) -> None:
    """Points per euro paid."""
    points = purchase_points(event.amount.amount_cents)
    await _add(ctx.conn, f"purchase:{event.order_id}", event.customer_id, points, "purchase", event.order_id)


async def on_refund_issued(deps: Deps, event: payment_events.RefundIssued, ctx: HandlerContext) -> None:
    """A refund takes back the points its payment earned."""
    earned = await ctx.conn.fetchval(
        "SELECT points FROM entries WHERE entry_key = $1", f"purchase:{event.order_id}"
    )
    if earned is None:
        # The payment's entry has not arrived yet (reordering): revoke what it will be worth.
        earned = purchase_points(event.amount.amount_cents)
    await _add(
        ctx.conn,
        f"revocation:{event.order_id}",
        event.customer_id,
        -int(earned),
        "revocation",
        event.order_id,
    )


async def balance(deps: Deps, principal: Principal, user_id: str) -> Balance:
    """A user's points, for that user or an admin."""
    target = user_id or principal.user_id
    principal.require_self_or_admin(target)
    row = await deps.pool.fetchrow(
        "SELECT coalesce(sum(points), 0) AS points,"
        " coalesce(sum(points) FILTER (WHERE points > 0), 0) AS lifetime,"
        " count(*) AS entries, max(created_at) AS updated FROM entries WHERE user_id = $1",
        target,
    )
    assert row is not None
    return Balance(target, int(row["points"]), int(row["lifetime"]), int(row["entries"]), row["updated"])
