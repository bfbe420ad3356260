"""WatchNotifications on real servers: a user's messages streamed as they are stored, from a
start in the past when asked, and every way a stream ends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import json_format, timestamp_pb2
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from a4co.identity.events.v1 import identity_events_pb2 as identity
from a4co.notifications.v1 import notifications_service_pb2 as pb
from a4co.notifications.v1 import notifications_service_pb2_grpc as pb_grpc
from services.notifications import grpc_api
from services.notifications.adapters.live import LiveNotifications
from services.platform.auth import Role
from services.platform.errors import ResourceExhaustedError, UnavailableError
from services.platform.grpc.status import details_of
from tests.integration.services.harness import (
    Keys,
    RunningService,
    bearer,
    publish_event,
    token,
)
from tests.integration.services.notifications.test_notifications import order_created
from tests.integration.services.test_grpcurl import GRPCURL
from tests.support.ended_connection import ended_by_the_kernel
from tests.support.waiting import eventually

if TYPE_CHECKING:
    from tests.integration.services.notifications.conftest import StartNotifications

READ_S = 15.0  # the longest a test waits for a stream's next message or its end


def watch(
    svc: RunningService, metadata: Any, start: datetime | None = None
) -> grpc.aio.UnaryStreamCall[pb.WatchNotificationsRequest, pb.WatchNotificationsResponse]:
    request = pb.WatchNotificationsRequest()
    if start is not None:
        request.start_time.FromDatetime(start)
    return pb_grpc.NotificationsServiceStub(svc.channel).WatchNotifications(request, metadata=metadata)


async def received(call: Any) -> pb.Notification:
    """The stream's next message."""
    async with asyncio.timeout(READ_S):
        response = await call.read()
    assert isinstance(response, pb.WatchNotificationsResponse), "the stream ended"
    return response.notification


async def titles(call: Any, count: int) -> list[str]:
    """The titles of the stream's next `count` messages."""
    return [(await received(call)).title for _ in range(count)]


async def ended(call: Any) -> tuple[grpc.StatusCode, str]:
    """How the stream ended (its messages until then read and dropped): code and reason."""
    error = await failure(call)
    info, _ = details_of(error)
    return error.code(), info.reason if info is not None else ""


async def failure(call: Any) -> grpc.aio.AioRpcError:
    """The error the stream ended with (its messages until then read and dropped)."""
    try:
        async with asyncio.timeout(READ_S):
            while await call.read() is not grpc.aio.EOF:
                pass
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the stream ended without an error")


async def live(svc: RunningService, user_id: str, *, followed: bool = True) -> None:
    """Until the user's channel has a subscriber (a stream opened before is live), or with
    `followed` false until it has none."""
    channel = f"{svc.infra.settings.prefix}:a4co:notifications:{user_id}"

    async def subscribed() -> bool:
        return (dict(await svc.infra.redis.pubsub_numsub(channel)).get(channel, 0) > 0) == followed

    await eventually(subscribed, what=f"{user_id}'s channel {'' if followed else 'un'}subscribed")


LABELS = {"service": "notifications", "method": "WatchNotifications"}


def streams_open() -> float:
    return REGISTRY.get_sample_value("a4co_grpc_server_streams", LABELS) or 0.0


def messages_sent() -> float:
    return REGISTRY.get_sample_value("a4co_grpc_server_stream_messages_sent_total", LABELS) or 0.0


async def test_a_stream_sends_what_was_stored_since_its_start_then_each_new_message_once(
    notifications: RunningService, keys: Keys
) -> None:
    before = datetime.now(UTC) - timedelta(minutes=5)
    await publish_event(notifications, identity.UserRegistered(user_id="c-1", email="ana@jaen.es"), "c-1")
    pool = notifications.infra.pool
    await eventually(lambda: pool.fetchval("SELECT count(*) > 0 FROM notifications"), what="the welcome")

    open_before, sent_before = streams_open(), messages_sent()
    call = watch(notifications, token(keys, "c-1", Role.CUSTOMER), start=before)
    welcome = await received(call)  # stored before the stream
    assert welcome.title == "¡Bienvenido a a4co!"
    assert streams_open() == open_before + 1
    # Pushed again after it was read from PostgreSQL (as when stored about the read's time).
    channel = f"{notifications.infra.settings.prefix}:a4co:notifications:c-1"
    again = json_format.MessageToJson(welcome, preserving_proto_field_name=True)
    await notifications.infra.redis.publish(channel, again)
    await publish_event(notifications, order_created("c-1", "a-1"), "o-1")
    await publish_event(notifications, order_created("c-1", "a-2"), "o-2")
    assert await titles(call, 2) == ["Hemos recibido tu pedido"] * 2  # live, each once
    call.cancel()
    await eventually(lambda: streams_open() == open_before, what="the stream closed")
    await live(notifications, "c-1", followed=False)  # its subscription let go with it
    assert messages_sent() - sent_before == 3


async def test_a_stream_without_a_start_sends_new_messages_only_and_ignores_what_is_not_one(
    notifications: RunningService, keys: Keys
) -> None:
    await publish_event(notifications, identity.UserRegistered(user_id="c-2", email="eva@jaen.es"), "c-2")
    pool = notifications.infra.pool
    await eventually(lambda: pool.fetchval("SELECT count(*) > 0 FROM notifications"), what="the welcome")
    call = watch(notifications, token(keys, "c-2", Role.CUSTOMER))
    await live(notifications, "c-2")
    channel = f"{notifications.infra.settings.prefix}:a4co:notifications:c-2"
    await notifications.infra.redis.publish(channel, "not a notification")
    await publish_event(notifications, order_created("c-2", "a-1"), "o-3")
    assert await titles(call, 1) == ["Hemos recibido tu pedido"]
    call.cancel()


async def test_a_user_sees_their_own_messages_only(notifications: RunningService, keys: Keys) -> None:
    call = watch(notifications, token(keys, "a-7", Role.ARTISAN))
    await live(notifications, "a-7")
    await publish_event(notifications, order_created("c-7", "a-7"), "o-7")  # a message to each
    assert await titles(call, 1) == ["Nuevo pedido"]
    await publish_event(notifications, order_created("c-8", "a-7"), "o-8")
    assert await titles(call, 1) == ["Nuevo pedido"]  # not the customer's message of o-7
    call.cancel()


async def test_a_resumed_stream_gets_what_was_stored_while_it_was_away(
    notifications: RunningService, keys: Keys
) -> None:
    metadata = token(keys, "c-3", Role.CUSTOMER)
    first = watch(notifications, metadata)
    await live(notifications, "c-3")
    seen, missed = order_created("c-3", "a-1"), order_created("c-3", "a-1")
    await publish_event(notifications, seen, seen.order_id)
    last = await received(first)
    first.cancel()

    await publish_event(notifications, missed, missed.order_id)  # while away
    pool = notifications.infra.pool
    await eventually(
        lambda: pool.fetchval("SELECT count(*) = 2 FROM notifications WHERE recipient_id = 'c-3'"),
        what="the second message stored",
    )
    again = watch(notifications, metadata, start=last.create_time.ToDatetime(tzinfo=UTC))
    resumed = [await received(again) for _ in range(2)]
    # The one it had (within the look-back) and the one it missed, oldest first.
    assert [n.subject_id for n in resumed] == [seen.order_id, missed.order_id]
    assert resumed[0].notification_id == last.notification_id
    again.cancel()


async def test_a_stream_ends_when_its_token_expires(notifications: RunningService, keys: Keys) -> None:
    access, _ = keys.issuer(ttl_s=1).issue("c-4", Role.CUSTOMER, str(uuid.uuid4()))
    call = watch(notifications, bearer(access))
    assert await ended(call) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")


async def test_a_stream_ends_when_its_session_ends(notifications: RunningService, keys: Keys) -> None:
    session = str(uuid.uuid4())
    access, _ = keys.issuer().issue("c-5", Role.CUSTOMER, session)
    call = watch(notifications, bearer(access))
    await live(notifications, "c-5")
    await notifications.infra.revocations.revoke(session, 900)  # identity's Logout
    assert await ended(call) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")


async def test_a_lost_redis_subscription_ends_the_stream_and_watching_again_misses_nothing(
    notifications: RunningService, keys: Keys
) -> None:
    metadata = token(keys, "c-6", Role.CUSTOMER)
    call = watch(notifications, metadata, start=datetime.now(UTC))
    await live(notifications, "c-6")
    await notifications.infra.redis.client_kill_filter(_type="pubsub")
    assert await ended(call) == (grpc.StatusCode.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE")

    await publish_event(notifications, order_created("c-6", "a-1"), "o-6")  # pushed to nobody
    again = watch(notifications, metadata, start=datetime.now(UTC) - timedelta(seconds=1))
    assert await titles(again, 1) == ["Hemos recibido tu pedido"]
    again.cancel()


async def test_streams_end_as_the_service_stops(start_notifications: StartNotifications, keys: Keys) -> None:
    async with start_notifications() as svc:
        channel = grpc.aio.insecure_channel(svc.address)  # outlives the service's own channel
        stub = pb_grpc.NotificationsServiceStub(channel)
        metadata = token(keys, "c-9", Role.CUSTOMER)
        call = stub.WatchNotifications(pb.WatchNotificationsRequest(), metadata=metadata)
        await live(svc, "c-9")
    try:
        assert await ended(call) == (grpc.StatusCode.UNAVAILABLE, "SERVICE_STOPPING")
    finally:
        await channel.close()


async def test_streams_past_the_limit_are_refused(notifications: RunningService, keys: Keys) -> None:
    notifications.runner.server.interceptor.max_streams = 1
    first = watch(notifications, token(keys, "c-10", Role.CUSTOMER))
    await live(notifications, "c-10")
    second = watch(notifications, token(keys, "c-11", Role.CUSTOMER))
    assert await ended(second) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS")
    first.cancel()


async def test_a_watch_needs_a_token_and_a_start_within_thirty_days(
    notifications: RunningService, keys: Keys
) -> None:
    assert await ended(watch(notifications, ())) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
    long_ago = datetime.now(UTC) - timedelta(days=31)
    error = await failure(watch(notifications, token(keys, "c-12", Role.CUSTOMER), start=long_ago))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in details_of(error)[1]] == ["start_time"]
    bad = pb.WatchNotificationsRequest(start_time=timestamp_pb2.Timestamp(seconds=1, nanos=-1))
    call = pb_grpc.NotificationsServiceStub(notifications.channel).WatchNotifications(
        bad, metadata=token(keys, "c-12", Role.CUSTOMER)
    )
    assert await ended(call) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")


@contextlib.asynccontextmanager
async def hub_of(svc: RunningService, **options: Any) -> AsyncIterator[LiveNotifications]:
    """A hub of live notifications of its own, following Redis."""
    infra = svc.infra
    hub = LiveNotifications(infra.redis, lambda user: f"{infra.settings.prefix}:hub:{user}", **options)
    following = asyncio.create_task(hub.follow())
    try:
        await eventually(lambda: hub.following, what="the hub's subscription")
        yield hub
    finally:
        following.cancel()


async def test_a_subscription_that_redis_py_renews_ends_its_watches(notifications: RunningService) -> None:
    """After a reconnection of its own, redis-py subscribes again, and Redis confirms again: what
    was pushed meanwhile is lost to the watches, which end."""
    async with hub_of(notifications) as hub, hub.watch("u-1") as watch, hub.watch("u-2") as other:
        channel = f"{notifications.infra.settings.prefix}:hub:u-1"
        assert hub._pubsub is not None
        await hub._pubsub.subscribe(channel)  # as redis-py's reconnection does
        with pytest.raises(UnavailableError):
            async with asyncio.timeout(READ_S):
                await watch.next()
        await notifications.infra.redis.publish(f"{notifications.infra.settings.prefix}:hub:u-2", "still")
        async with asyncio.timeout(READ_S):
            assert await other.next() == "still"  # another user's channel was not renewed


# A read that spins never gives the event loop back, so only pytest-timeout's signal can end it.
@pytest.mark.timeout(30)
async def test_a_connection_the_kernel_ended_ends_the_watches_and_is_subscribed_again(
    notifications: RunningService,
) -> None:
    """redis-py 8.1 reads such a connection as nothing, at once and for ever (services/platform/pubsub.py)."""
    channel = f"{notifications.infra.settings.prefix}:hub:u-1"
    async with hub_of(notifications) as hub:
        async with hub.watch("u-1") as watch:
            assert hub._pubsub is not None
            ended_by_the_kernel(hub._pubsub)
            with pytest.raises(UnavailableError):
                async with asyncio.timeout(READ_S):
                    await watch.next()
        await eventually(lambda: hub.following, what="the hub subscribed again")
        async with hub.watch("u-1") as again:
            await notifications.infra.redis.publish(channel, "after")
            async with asyncio.timeout(READ_S):
                assert await again.next() == "after"


async def test_a_user_may_keep_so_many_streams_open_in_a_process(notifications: RunningService) -> None:
    async with hub_of(notifications, per_user=2) as hub:
        async with hub.watch("u-1"), hub.watch("u-1"):
            with pytest.raises(ResourceExhaustedError) as refused:
                async with hub.watch("u-1"):
                    pass
            assert refused.value.reason == "TOO_MANY_STREAMS"
            async with hub.watch("u-2"):  # another user's are their own
                pass
        async with hub.watch("u-1"):  # closed ones count no more
            pass


async def test_grpcurl_watches_as_the_readme_shows(notifications: RunningService, keys: Keys) -> None:
    """The README's command: the messages since a time, printed as they come, until stopped."""
    await publish_event(notifications, identity.UserRegistered(user_id="c-13", email="luz@jaen.es"), "c-13")
    pool = notifications.infra.pool
    await eventually(lambda: pool.fetchval("SELECT count(*) > 0 FROM notifications"), what="the welcome")
    access, _ = keys.issuer().issue("c-13", Role.CUSTOMER, str(uuid.uuid4()))
    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    request = json.dumps({"start_time": since})
    proc = await asyncio.create_subprocess_exec(
        GRPCURL, "-plaintext", "-H", f"authorization: Bearer {access}", "-d", request,
        notifications.address, "a4co.notifications.v1.NotificationsService/WatchNotifications",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    printed = ""
    try:
        async with asyncio.timeout(READ_S):
            while not printed.endswith("\n}\n"):  # the first message, whole
                printed += (await proc.stdout.readline()).decode()
    finally:
        proc.kill()
        await proc.wait()
    assert json.loads(printed)["notification"]["title"] == "¡Bienvenido a a4co!"


async def test_without_redis_a_watch_is_refused_as_unavailable() -> None:
    dead = Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.5)  # nothing listens there
    hub = LiveNotifications(dead, lambda user: f"hub:{user}", subscribe_timeout_s=0.5)
    following = asyncio.create_task(hub.follow())
    try:
        with pytest.raises(UnavailableError) as refused:
            async with hub.watch("u-1"):
                pass
        assert refused.value.reason == "DEPENDENCY_UNAVAILABLE"
    finally:
        following.cancel()
        await dead.aclose()


class Silent:
    """A TCP proxy to a server that, once `silenced`, forwards nothing more either way and closes
    nothing: a client gone without closing its connection (a laptop asleep, a network cut)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.silenced = asyncio.Event()
        self.address = ""
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Silent:
        self._server = await asyncio.start_server(self._proxy, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for pump in self._pumps:
            pump.cancel()

    async def _proxy(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        host, port = self.target.rsplit(":", 1)
        server_in, server_out = await asyncio.open_connection(host, int(port))
        for source, sink in ((client_in, server_out), (server_in, client_out)):
            pump = asyncio.create_task(self._pump(source, sink))
            self._pumps.add(pump)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            if self.silenced.is_set():
                await asyncio.Event().wait()  # neither forwarded nor closed, for good
            sink.write(data)
            await sink.drain()


async def test_a_client_gone_silent_has_its_stream_ended_by_the_servers_keepalive(
    start_notifications: StartNotifications, keys: Keys
) -> None:
    async with start_notifications(grpc_keepalive_s=0.5) as svc, Silent(svc.address) as proxy:
        channel = grpc.aio.insecure_channel(proxy.address)
        open_before = streams_open()
        stub = pb_grpc.NotificationsServiceStub(channel)
        call = stub.WatchNotifications(
            pb.WatchNotificationsRequest(), metadata=token(keys, "c-14", Role.CUSTOMER)
        )
        try:
            await live(svc, "c-14")
            await eventually(lambda: streams_open() == open_before + 1, what="the stream open")
            proxy.silenced.set()
            await eventually(lambda: streams_open() == open_before, what="the silent client's stream ended")
            await live(svc, "c-14", followed=False)
        finally:
            call.cancel()
            await channel.close(grace=0)


async def test_a_message_whose_push_was_lost_reaches_the_stream_at_its_next_read(
    notifications: RunningService, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(grpc_api, "WATCH_RECHECK_S", 0.3)
    pool = notifications.infra.pool
    await publish_event(notifications, identity.UserRegistered(user_id="c-15", email="sol@jaen.es"), "c-15")
    await eventually(lambda: pool.fetchval("SELECT count(*) > 0 FROM notifications"), what="the welcome")
    call = watch(notifications, token(keys, "c-15", Role.CUSTOMER))  # new messages only
    await live(notifications, "c-15")
    # Stored, but its PUBLISH failed: no push comes.
    await pool.execute(
        "INSERT INTO notifications (notification_id, recipient_id, topic, title, body, subject_id, event_id)"
        " VALUES ($1, 'c-15', 'a4co.orders.OrderStatusChanged', 'Sin aviso', '-', 'o-15', $2)",
        uuid.uuid4(),
        uuid.uuid4(),
    )
    assert await titles(call, 1) == ["Sin aviso"]  # not the welcome, stored before the stream
    await publish_event(notifications, order_created("c-15", "a-1"), "o-16")
    assert await titles(call, 1) == ["Hemos recibido tu pedido"]  # the lost one was sent once
    call.cancel()
