"""The events cms consumes."""

from __future__ import annotations

from google.protobuf.message import Message

from a4co.artisans.events.v1 import artisan_events_pb2
from a4co.identity.events.v1 import identity_events_pb2
from services.cms import handlers
from services.platform.events.subscriptions import UnboundHandler

HANDLERS: dict[type[Message], UnboundHandler] = {
    identity_events_pb2.UserRegistered: handlers.on_user_registered,
    identity_events_pb2.ProfileUpdated: handlers.on_profile_updated,
    identity_events_pb2.UserDeleted: handlers.on_user_deleted,
    artisan_events_pb2.ArtisanOnboarded: handlers.on_artisan,
    artisan_events_pb2.ArtisanUpdated: handlers.on_artisan,
    artisan_events_pb2.ArtisanOffboarded: handlers.on_artisan,
}
