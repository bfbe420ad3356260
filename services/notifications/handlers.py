"""notifications' event handler and listing."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from google.protobuf.message import Message
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis

from a4co.identity.events.v1 import identity_events_pb2 as identity
from services.notifications.adapters.transports import Outgoing, Transport
from services.notifications.messages import MESSAGES, Note
from services.platform.auth import Principal
from services.platform.db import Connection, Queryable, columns
from services.platform.events.consumer import HandlerContext
from services.platform.flow import new_id
from services.platform.paging import Page, page_sql
from services.platform.resilience import Backoff, every

log = logging.getLogger(__name__)

# A delivery that fails is tried again, from 30 s later, doubling up to an hour apart: ten tries over
# 2.4 to 3.1 hours (the jitter), then given up on (the message stays listed; `undelivered` says why).
DELIVERY_ATTEMPTS = 10
DELIVERY_BACKOFF = Backoff(first_s=30.0, cap_s=3600.0)
DELIVERY_LEASE_S = 300.0  # a try's claim on a message, in case its process dies meanwhile
DELIVERIES = Counter(
    "a4co_notification_deliveries",
    "Deliveries of notifications by outcome: delivered, failed (tried again later), gave_up.",
    ["outcome"],
)
_DELIVERED, _FAILED, _GAVE_UP = (DELIVERIES.labels(o) for o in ("delivered", "failed", "gave_up"))
UNDELIVERED = Gauge("a4co_notifications_undelivered", "Notifications waiting to be delivered again.")


@dataclass(frozen=True, slots=True)
class Deps:
    """What the use cases are built with."""

    pool: asyncpg.Pool
    redis: Redis
    transport: Transport
    prefix: str = ""

    def channel(self, user_id: str) -> str:
        """The Redis pub/sub channel of a user's live notifications."""
        return f"{self.prefix + ':' if self.prefix else ''}a4co:notifications:{user_id}"


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored notification."""

    notification_id: str
    recipient_id: str
    topic: str
    title: str
    body: str
    subject_id: str
    event_id: str
    created_at: datetime
    read_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class _Made:
    """The messages one event made, waiting to be stored with the rest of its transaction's."""

    deps: Deps
    event_type: str
    event_id: str
    ids: list[str]
    notes: list[Note]


async def on_event(deps: Deps, event: Message, ctx: HandlerContext) -> None:
    """Turn an event into messages: store them, then (after commit) push and deliver them."""
    if isinstance(event, identity.UserRegistered | identity.PasswordResetRequested):
        await ctx.conn.execute(
            # Not for a closed account's late event (decision 48).
            "INSERT INTO contacts (user_id, email, display_name) SELECT $1, $2, $3"
            " WHERE NOT EXISTS (SELECT 1 FROM forgotten WHERE user_id = $1)"
            " ON CONFLICT (user_id) DO UPDATE SET email = EXCLUDED.email,"
            " display_name = EXCLUDED.display_name",
            event.user_id,
            event.email,
            event.display_name,
        )
    notes = MESSAGES[type(event)](event)
    if notes:
        made = _Made(
            deps, ctx.event.definition.event_type, ctx.event.event_id, [new_id() for _ in notes], notes
        )
        ctx.stage(_store, made)


async def on_user_deleted(deps: Deps, event: identity.UserDeleted, ctx: HandlerContext) -> None:
    """Forget a user who closed their account: their address, their messages and those waiting to
    be mailed; no message is stored for them from now on."""
    await ctx.conn.execute(
        "INSERT INTO forgotten (user_id) VALUES ($1) ON CONFLICT DO NOTHING", event.user_id
    )
    await ctx.conn.execute(
        "DELETE FROM undelivered u USING notifications n"
        " WHERE n.notification_id = u.notification_id AND n.recipient_id = $1",
        event.user_id,
    )
    await ctx.conn.execute("DELETE FROM notifications WHERE recipient_id = $1", event.user_id)
    await ctx.conn.execute("DELETE FROM contacts WHERE user_id = $1", event.user_id)


async def _store(conn: Connection, batch: list[_Made]) -> Callable[[], Awaitable[None]] | None:
    """Store the messages of every event of a transaction in one statement; push and deliver the
    stored ones once it commits. A user hears of an event once: a second message of it to the same
    person (an artisan buying from their own workshop) is skipped."""
    notes = [
        (note_id, n.recipient_id, made.event_type, n.title, n.body, n.subject_id, made.event_id, n.mailed)
        for made in batch
        for note_id, n in zip(made.ids, made.notes, strict=True)
    ]
    rows = await conn.fetch(
        "INSERT INTO notifications"
        " (notification_id, recipient_id, topic, title, body, subject_id, event_id, mailed)"
        " SELECT m.id, m.recipient_id, m.topic, m.title, m.body, m.subject_id, m.event_id, m.mailed"
        " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::uuid[],"
        " $8::text[]) AS m(id, recipient_id, topic, title, body, subject_id, event_id, mailed)"
        " WHERE NOT EXISTS (SELECT 1 FROM forgotten f WHERE f.user_id = m.recipient_id)"
        " ON CONFLICT (recipient_id, event_id) DO NOTHING"
        " RETURNING *, (SELECT email FROM contacts WHERE user_id = notifications.recipient_id) AS email",
        *columns(notes, 8),
    )
    by_id = {str(row["notification_id"]): row for row in rows}
    stored = [by_id[note[0]] for note in notes if note[0] in by_id]  # in the order made
    if not stored:
        return None
    deps = batch[0].deps

    async def push_and_deliver() -> None:
        # One round trip to Redis for all the pushes of the transaction. A push is for whoever
        # listens now, and the message is listed either way: a Redis outage must not stop delivery.
        try:
            async with deps.redis.pipeline(transaction=False) as pipe:
                for row in stored:
                    document = json.dumps(_document(row), ensure_ascii=False)
                    pipe.publish(deps.channel(row["recipient_id"]), document)
                await pipe.execute()
        except Exception as exc:
            log.warning("could not push %d notifications (%r); delivering them", len(stored), exc)
        failed, secrets_sent = [], []
        for row in stored:
            mailed = row["mailed"]
            try:
                await deps.transport.send(
                    Outgoing(row["recipient_id"], row["email"] or "", row["title"], mailed or row["body"])
                )
            except Exception as exc:  # stored and listed; tried again later (`deliver_again`)
                log.warning(
                    "could not deliver notification %s (%r); will try again", row["notification_id"], exc
                )
                failed.append((row["notification_id"], f"{type(exc).__name__}: {exc}"))
            else:
                _DELIVERED.inc()
                if mailed is not None:
                    secrets_sent.append(row["notification_id"])
        if secrets_sent:
            await _forget_mailed(deps.pool, secrets_sent)
        if failed:
            _FAILED.inc(len(failed))
            await deps.pool.execute(
                "INSERT INTO undelivered (notification_id, attempts, next_attempt_at, last_error)"
                " SELECT id, 1, now() + make_interval(secs => $3), error"
                " FROM unnest($1::uuid[], $2::text[]) AS f(id, error) ON CONFLICT DO NOTHING",
                *columns(failed, 2),
                DELIVERY_BACKOFF.delay(1),
            )

    return push_and_deliver


async def deliver_due(deps: Deps, limit: int = 100) -> int:
    """Try again the deliveries that are due; returns how many were delivered.

    The due messages are claimed first (their next try moved a lease ahead, `SKIP LOCKED` for the
    other replicas), then sent outside any transaction, then each is settled: a delivered one
    leaves `undelivered`, a failed one waits longer, the last try's failure gives up on it."""
    claimed = await deps.pool.fetch(
        "UPDATE undelivered u SET next_attempt_at = now() + make_interval(secs => $2)"
        " FROM notifications n LEFT JOIN contacts c ON c.user_id = n.recipient_id"
        " WHERE n.notification_id = u.notification_id AND u.notification_id IN ("
        "  SELECT notification_id FROM undelivered WHERE gave_up_at IS NULL AND next_attempt_at <= now()"
        "  ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
        " RETURNING u.notification_id, u.attempts, n.recipient_id, n.title,"
        " coalesce(n.mailed, n.body) AS body, n.mailed IS NOT NULL AS secret, coalesce(c.email, '') AS email",
        limit,
        DELIVERY_LEASE_S,
    )
    delivered = 0
    for row in claimed:
        try:
            await deps.transport.send(Outgoing(row["recipient_id"], row["email"], row["title"], row["body"]))
        except Exception as exc:
            attempts = row["attempts"] + 1
            gave_up = attempts >= DELIVERY_ATTEMPTS
            await deps.pool.execute(
                "UPDATE undelivered SET attempts = $2, next_attempt_at = now() + make_interval(secs => $3),"
                " last_error = $4, gave_up_at = CASE WHEN $5 THEN now() END WHERE notification_id = $1",
                row["notification_id"],
                attempts,
                DELIVERY_BACKOFF.delay(attempts),
                f"{type(exc).__name__}: {exc}",
                gave_up,
            )
            (_GAVE_UP if gave_up else _FAILED).inc()
            if gave_up:
                log.error(
                    "gave up delivering notification %s after %d tries: %r",
                    row["notification_id"],
                    attempts,
                    exc,
                )
                if row["secret"]:
                    await _forget_mailed(deps.pool, [row["notification_id"]])
        else:
            await deps.pool.execute(
                "DELETE FROM undelivered WHERE notification_id = $1", row["notification_id"]
            )
            if row["secret"]:
                await _forget_mailed(deps.pool, [row["notification_id"]])
            _DELIVERED.inc()
            delivered += 1
    return delivered


async def _forget_mailed(pool: asyncpg.Pool, notification_ids: list[uuid.UUID]) -> None:
    """Empty what was mailed in place of the messages' bodies (a secret, such as a reset code) once
    it will not be mailed again."""
    await pool.execute(
        "UPDATE notifications SET mailed = NULL WHERE notification_id = ANY($1::uuid[])", notification_ids
    )


async def deliver_again(deps: Deps, every_s: float = 5.0) -> None:
    """`deliver_due` every `every_s` (a background job), and the `a4co_notifications_undelivered` gauge."""

    async def tick() -> None:
        await deliver_due(deps)
        UNDELIVERED.set(await deps.pool.fetchval("SELECT count(*) FROM undelivered WHERE gave_up_at IS NULL"))

    await every(every_s, tick, "delivering the notifications due again")


def _document(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "notification_id": str(row["notification_id"]),
        "recipient_id": row["recipient_id"],
        "topic": row["topic"],
        "title": row["title"],
        "body": row["body"],
        "subject_id": row["subject_id"],
        "event_id": str(row["event_id"]),
        "create_time": row["created_at"].isoformat(),
    }


def _stored(row: asyncpg.Record) -> Stored:
    return Stored(
        str(row["notification_id"]),
        row["recipient_id"],
        row["topic"],
        row["title"],
        row["body"],
        row["subject_id"],
        str(row["event_id"]),
        row["created_at"],
        row["read_at"],
    )


async def list_for(
    deps: Deps, principal: Principal, page: Page, unread_only: bool = False
) -> tuple[list[Stored], int]:
    """A page of the caller's notifications, newest first (the unread ones only, with
    `unread_only`), and how many of theirs are unread in all."""
    args: list[object] = [principal.user_id]
    where = "recipient_id = $1" + (" AND read_at IS NULL" if unread_only else "")
    where += page_sql(page, "created_at", "notification_id", args)
    async with deps.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(f"SELECT * FROM notifications WHERE {where}", *args)  # noqa: S608 (values bound)
        unread = await _unread(conn, principal.user_id)
    return [_stored(r) for r in rows], unread


async def _unread(conn: Queryable, user_id: str) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM notifications WHERE recipient_id = $1 AND read_at IS NULL", user_id
    )
    return count


async def mark_read(
    deps: Deps, principal: Principal, notification_ids: list[str], through: datetime | None
) -> tuple[int, int]:
    """Mark the caller's notifications read: those of `notification_ids`, and all created up to
    `through`; returns how many this call marked and how many remain unread."""
    async with deps.pool.acquire() as conn, conn.transaction():
        marked: int = await conn.fetchval(
            "WITH marked AS (UPDATE notifications SET read_at = clock_timestamp()"
            " WHERE recipient_id = $1 AND read_at IS NULL"
            " AND (notification_id = ANY($2::uuid[]) OR created_at <= $3) RETURNING 1)"
            " SELECT count(*) FROM marked",
            principal.user_id,
            notification_ids,
            through,
        )
        return marked, await _unread(conn, principal.user_id)


async def stored_since(
    deps: Deps, principal: Principal, since: datetime, chunk: int = 100
) -> AsyncIterator[Stored]:
    """The caller's notifications created at or after `since`, oldest first, read `chunk` at a
    time (each chunk after the last one read, so that all are read once however many there are)."""
    after: tuple[datetime, uuid.UUID] = (since, uuid.UUID(int=0))  # before any id at `since`
    while True:
        rows = await deps.pool.fetch(
            "SELECT * FROM notifications WHERE recipient_id = $1"
            " AND (created_at, notification_id) > ($2, $3) ORDER BY created_at, notification_id LIMIT $4",
            principal.user_id,
            *after,
            chunk,
        )
        for row in rows:
            yield _stored(row)
        if len(rows) < chunk:
            return
        after = (rows[-1]["created_at"], rows[-1]["notification_id"])


def pushed(document: str) -> Stored | None:
    """A notification as pushed on its recipient's channel (`_document`); None, logged, for
    anything else published there."""
    try:
        fields = json.loads(document)
        return Stored(
            str(fields["notification_id"]),
            str(fields["recipient_id"]),
            str(fields["topic"]),
            str(fields["title"]),
            str(fields["body"]),
            str(fields["subject_id"]),
            str(fields["event_id"]),
            datetime.fromisoformat(fields["create_time"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignored a message on a notifications channel (%r): %.200r", exc, document)
        return None
