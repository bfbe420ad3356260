"""notifications' event handler and listing."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from google.protobuf.message import Message
from redis.asyncio import Redis

from a4co.identity.events.v1 import identity_events_pb2 as identity
from services.notifications.adapters.transports import Outgoing, Transport
from services.notifications.messages import MESSAGES
from services.platform.auth import Principal
from services.platform.events.consumer import HandlerContext

log = logging.getLogger(__name__)


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


async def on_event(deps: Deps, event: Message, ctx: HandlerContext) -> None:
    """Turn an event into messages: store them, then (after commit) push and deliver them."""
    if isinstance(event, identity.UserRegistered):
        await ctx.conn.execute(
            "INSERT INTO contacts (user_id, email, display_name) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id) DO UPDATE SET email = EXCLUDED.email,"
            " display_name = EXCLUDED.display_name",
            event.user_id,
            event.email,
            event.display_name,
        )
    stored = []
    for message in MESSAGES[type(event)](event):
        row = await ctx.conn.fetchrow(
            "INSERT INTO notifications"
            " (notification_id, recipient_id, topic, title, body, subject_id, event_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (recipient_id, event_id) DO NOTHING"
            " RETURNING *, (SELECT email FROM contacts WHERE user_id = $2) AS email",
            str(uuid.uuid4()),
            message.recipient_id,
            ctx.event.definition.event_type,
            message.title,
            message.body,
            message.subject_id,
            ctx.event.event_id,
        )
        if row is not None:
            stored.append(row)

    async def push_and_deliver() -> None:
        for row in stored:
            document = _document(row)
            await deps.redis.publish(
                deps.channel(row["recipient_id"]), json.dumps(document, ensure_ascii=False)
            )
            try:
                await deps.transport.send(
                    Outgoing(row["recipient_id"], row["email"] or "", row["title"], row["body"])
                )
            except Exception:  # the notification is stored and listed; delivery failures are logged
                log.exception("could not deliver notification %s", row["notification_id"])

    ctx.after_commit(push_and_deliver)


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


async def list_for(deps: Deps, principal: Principal, offset: int, limit: int) -> list[Stored]:
    """The caller's notifications, newest first."""
    rows = await deps.pool.fetch(
        "SELECT * FROM notifications WHERE recipient_id = $1 ORDER BY created_at DESC, notification_id"
        " LIMIT $2 OFFSET $3",
        principal.user_id,
        limit,
        offset,
    )
    return [
        Stored(
            str(r["notification_id"]),
            r["recipient_id"],
            r["topic"],
            r["title"],
            r["body"],
            r["subject_id"],
            str(r["event_id"]),
            r["created_at"],
        )
        for r in rows
    ]
