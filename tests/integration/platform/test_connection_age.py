"""A service's gRPC server asks each client connection, after `A4CO_GRPC_MAX_CONNECTION_AGE_S`, to
make a new one (GOAWAY), so that a client spreading its calls over a name's replicas finds those
started since; a stream open on the old connection runs on to its end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from a4co.notifications.v1 import notifications_service_pb2 as pb
from a4co.notifications.v1 import notifications_service_pb2_grpc as pb_grpc
from services.platform.grpc.interceptor import PlatformInterceptor
from services.platform.grpc.server import GrpcServer, Registration
from tests.support.waiting import eventually

SERVICE = "a4co.notifications.v1.NotificationsService"


class Watched(pb_grpc.NotificationsServiceServicer):
    """A stream that sends what the test puts in `outbox`, and a unary call."""

    def __init__(self) -> None:
        self.outbox: asyncio.Queue[str] = asyncio.Queue()

    async def WatchNotifications(  # noqa: N802
        self, request: pb.WatchNotificationsRequest, context: Any
    ) -> AsyncIterator[pb.WatchNotificationsResponse]:
        while True:
            notification_id = await self.outbox.get()
            yield pb.WatchNotificationsResponse(notification=pb.Notification(notification_id=notification_id))

    async def ListNotifications(  # noqa: N802
        self, request: pb.ListNotificationsRequest, context: Any
    ) -> pb.ListNotificationsResponse:
        return pb.ListNotificationsResponse()

    async def MarkNotificationsRead(  # noqa: N802
        self, request: pb.MarkNotificationsReadRequest, context: Any
    ) -> pb.MarkNotificationsReadResponse:
        return pb.MarkNotificationsReadResponse()


async def received(stream: Any) -> str:
    """The id of the next notification `stream` sends."""
    response: pb.WatchNotificationsResponse = await stream.read()
    return response.notification.notification_id


async def test_a_connection_is_asked_to_go_after_its_age_and_its_stream_runs_on() -> None:
    servicer = Watched()
    add = pb_grpc.add_NotificationsServiceServicer_to_server
    interceptor = PlatformInterceptor(
        service="notifications", domain="notifications.a4co", policies={}, verifier=None
    )
    server = GrpcServer(
        [Registration(SERVICE, lambda s: add(servicer, s))], interceptor, max_connection_age_s=0.5
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.NotificationsServiceStub(channel)
            stream = stub.WatchNotifications(pb.WatchNotificationsRequest())
            servicer.outbox.put_nowait("n-1")
            assert await received(stream) == "n-1"
            assert channel.get_state() is grpc.ChannelConnectivity.READY

            def asked_to_go() -> bool:  # the connection draining: the channel no longer READY on it
                return channel.get_state() is not grpc.ChannelConnectivity.READY

            await eventually(asked_to_go, what="the GOAWAY after the connection's age")
            servicer.outbox.put_nowait("n-2")
            assert await received(stream) == "n-2", "the stream runs on"
            await stub.ListNotifications(pb.ListNotificationsRequest(), timeout=5)  # on a new connection
            stream.cancel()
    finally:
        await server.stop(grace_s=0)
