"""notifications' gRPC servicer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from a4co.notifications.v1 import notifications_service_pb2 as pb
from a4co.notifications.v1 import notifications_service_pb2_grpc as pb_grpc
from services.notifications import handlers
from services.notifications.adapters.live import LiveNotifications
from services.platform.auth import current_principal
from services.platform.grpc.interceptor import MethodPolicy
from services.platform.grpc.server import Registration
from services.platform.paging import Page, check_list
from services.platform.timestamps import optional_timestamp, to_timestamp
from services.platform.validation import Violations

SERVICE = pb.DESCRIPTOR.services_by_name["NotificationsService"].full_name
Context = grpc.aio.ServicerContext[Any, Any]


# How far back a stream's start may be; older messages are listed by ListNotifications.
WATCH_SINCE_AT_MOST = timedelta(days=30)
# A stream also sends what was created this long before its start: a message is created before its
# transaction commits, so one created just before a client's last message may be stored after it.
WATCH_LOOKBACK = timedelta(seconds=30)
# How often a stream reads again what was stored for its caller since its last read.
WATCH_RECHECK_S = 30.0


def check_watch(request: pb.WatchNotificationsRequest) -> None:
    """A start_time that is a time, and within the last 30 days."""
    v = Violations()
    if request.HasField("start_time") and v.timestamp(request.start_time, "start_time"):
        v.check(
            request.start_time.ToDatetime(tzinfo=UTC) >= datetime.now(UTC) - WATCH_SINCE_AT_MOST,
            "start_time",
            "must be within the last 30 days (ListNotifications lists older messages)",
        )
    v.raise_if_any()


MAX_MARKED = 100  # ids one MarkNotificationsRead may name


def check_mark(request: pb.MarkNotificationsReadRequest) -> None:
    """Up to 100 notification ids (UUIDs), or a time, or both."""
    v = Violations()
    v.check(
        bool(request.notification_ids) or request.HasField("read_through"),
        "notification_ids",
        "name the messages read, or set read_through",
    )
    if v.check(len(request.notification_ids) <= MAX_MARKED, "notification_ids", f"at most {MAX_MARKED}"):
        for i, notification_id in enumerate(request.notification_ids):
            v.uuid(notification_id, f"notification_ids[{i}]")
    if request.HasField("read_through"):
        v.timestamp(request.read_through, "read_through")
    v.raise_if_any()


POLICIES = {
    f"/{SERVICE}/ListNotifications": MethodPolicy(validator=check_list),
    f"/{SERVICE}/WatchNotifications": MethodPolicy(validator=check_watch),
    f"/{SERVICE}/MarkNotificationsRead": MethodPolicy(validator=check_mark),
}


def notification(n: handlers.Stored) -> pb.Notification:
    """A stored notification as the API shows it."""
    return pb.Notification(
        notification_id=n.notification_id,
        recipient_id=n.recipient_id,
        topic=n.topic,
        title=n.title,
        body=n.body,
        subject_id=n.subject_id,
        event_id=n.event_id,
        create_time=to_timestamp(n.created_at),
        read_time=optional_timestamp(n.read_at),
    )


class NotificationsServicer(pb_grpc.NotificationsServiceServicer):
    """The NotificationsService RPCs."""

    def __init__(self, deps: handlers.Deps, live: LiveNotifications) -> None:
        self.deps = deps
        self.live = live

    async def ListNotifications(
        self, request: pb.ListNotificationsRequest, context: Context
    ) -> pb.ListNotificationsResponse:
        """The caller's notifications, newest first."""
        page = Page.of(request, ("notifications", request.unread_only))
        stored, unread = await handlers.list_for(self.deps, current_principal(), page, request.unread_only)
        found, token = page.split(stored, lambda n: (n.created_at, n.notification_id))
        return pb.ListNotificationsResponse(
            notifications=[notification(n) for n in found], next_page_token=token, unread_count=unread
        )

    async def MarkNotificationsRead(
        self, request: pb.MarkNotificationsReadRequest, context: Context
    ) -> pb.MarkNotificationsReadResponse:
        """Mark the caller's notifications read."""
        through = request.read_through.ToDatetime(tzinfo=UTC) if request.HasField("read_through") else None
        marked, unread = await handlers.mark_read(
            self.deps, current_principal(), list(request.notification_ids), through
        )
        return pb.MarkNotificationsReadResponse(marked_count=marked, unread_count=unread)

    async def WatchNotifications(
        self, request: pb.WatchNotificationsRequest, context: Context
    ) -> AsyncIterator[pb.WatchNotificationsResponse]:
        """The caller's notifications since start_time, then each new one (see the .proto).

        The live subscription is confirmed before the stored ones are read: whatever is stored
        after the read is pushed to it. Every `WATCH_RECHECK_S` the stream reads again what was
        stored since its last read, so that a push lost on its way (a failed PUBLISH: the message
        is stored either way) reaches it that late rather than never. A message that comes both
        ways is sent once."""
        principal = current_principal()
        opened = datetime.now(UTC)
        wanted = request.start_time.ToDatetime(tzinfo=UTC) if request.HasField("start_time") else None
        # Nothing created before this is sent: the start asked for, or the stream's opening.
        floor = wanted - WATCH_LOOKBACK if wanted is not None else opened
        read_up_to = wanted if wanted is not None else opened
        sent: dict[str, datetime] = {}  # what this stream sent, that a later read could find again
        due = time.monotonic() if wanted is not None else time.monotonic() + WATCH_RECHECK_S
        async with self.live.watch(principal.user_id) as live:
            while True:
                if time.monotonic() >= due:
                    since, read_up_to = max(floor, read_up_to - WATCH_LOOKBACK), datetime.now(UTC)
                    async for stored in handlers.stored_since(self.deps, principal, since):
                        if stored.notification_id not in sent:
                            sent[stored.notification_id] = stored.created_at
                            yield pb.WatchNotificationsResponse(notification=notification(stored))
                    # The next read starts after these: they cannot come again.
                    sent = {i: at for i, at in sent.items() if at >= read_up_to - WATCH_LOOKBACK}
                    due = time.monotonic() + WATCH_RECHECK_S
                    continue
                try:
                    async with asyncio.timeout(due - time.monotonic()):
                        document = await live.next()
                except TimeoutError:
                    continue
                pushed = handlers.pushed(document)
                if pushed is None or pushed.notification_id in sent:
                    continue
                sent[pushed.notification_id] = pushed.created_at
                yield pb.WatchNotificationsResponse(notification=notification(pushed))


def registration(deps: handlers.Deps, live: LiveNotifications) -> Registration:
    """How the runtime serves notifications."""
    servicer = NotificationsServicer(deps, live)
    return Registration(
        SERVICE, lambda server: pb_grpc.add_NotificationsServiceServicer_to_server(servicer, server)
    )
