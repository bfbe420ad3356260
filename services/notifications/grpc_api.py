"""notifications' gRPC servicer."""

from __future__ import annotations

from typing import Any

import grpc

from a4co.notifications.v1 import notifications_service_pb2 as pb
from a4co.notifications.v1 import notifications_service_pb2_grpc as pb_grpc
from services.notifications import handlers
from services.platform.auth import current_principal
from services.platform.grpc.interceptor import MethodPolicy
from services.platform.grpc.server import Registration
from services.platform.paging import MAX_TOKEN, next_token, offset_of
from services.platform.timestamps import to_timestamp
from services.platform.validation import Violations

SERVICE = pb.DESCRIPTOR.services_by_name["NotificationsService"].full_name
Context = grpc.aio.ServicerContext[Any, Any]


def check_list(request: pb.ListNotificationsRequest) -> None:
    """A page of at most 100, and a page token no longer than this API's."""
    v = Violations()
    v.between(request.page_size, "page_size", 0, 100)
    v.at_most(request.page_token, "page_token", MAX_TOKEN)
    v.raise_if_any()


POLICIES = {f"/{SERVICE}/ListNotifications": MethodPolicy(validator=check_list)}


class NotificationsServicer(pb_grpc.NotificationsServiceServicer):
    """The NotificationsService RPCs."""

    def __init__(self, deps: handlers.Deps) -> None:
        self.deps = deps

    async def ListNotifications(
        self, request: pb.ListNotificationsRequest, context: Context
    ) -> pb.ListNotificationsResponse:
        """The caller's notifications, newest first."""
        size, offset = request.page_size or 20, offset_of(request.page_token)
        found = await handlers.list_for(self.deps, current_principal(), offset, size + 1)
        token = next_token(offset, size, len(found) > size)
        return pb.ListNotificationsResponse(
            notifications=[
                pb.Notification(
                    notification_id=n.notification_id,
                    recipient_id=n.recipient_id,
                    topic=n.topic,
                    title=n.title,
                    body=n.body,
                    subject_id=n.subject_id,
                    event_id=n.event_id,
                    create_time=to_timestamp(n.created_at),
                )
                for n in found[:size]
            ],
            next_page_token=token,
        )


def registration(deps: handlers.Deps) -> Registration:
    """How the runtime serves notifications."""
    servicer = NotificationsServicer(deps)
    return Registration(
        SERVICE, lambda server: pb_grpc.add_NotificationsServiceServicer_to_server(servicer, server)
    )
