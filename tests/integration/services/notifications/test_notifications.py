"""notifications on real servers: each event's messages stored, pushed and mailed once."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from a4co.identity.events.v1 import identity_events_pb2 as identity
from a4co.notifications.v1 import notifications_service_pb2 as pb
from a4co.notifications.v1 import notifications_service_pb2_grpc as pb_grpc
from a4co.orders.events.v1 import order_events_pb2 as orders
from a4co.type.v1 import money_pb2
from services.notifications import handlers
from services.notifications.adapters.transports import FileTransport
from services.notifications.messages import Note
from services.platform.auth import Role
from services.platform.grpc.status import details_of
from services.platform.paging import OTHER_FILTERS
from services.platform.timestamps import to_timestamp
from tests.integration.services.harness import (
    Keys,
    RunningService,
    publish_event,
    token,
)
from tests.integration.services.test_grpcurl import call
from tests.support.rpc import failure
from tests.support.waiting import eventually

if TYPE_CHECKING:
    from tests.integration.services.notifications.conftest import StartNotifications


def mail(tmp_path: Path) -> list[dict[str, str]]:
    path = tmp_path / "mail" / "outbox.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def order_created(customer_id: str, artisan_id: str) -> orders.OrderCreated:
    return orders.OrderCreated(
        order_id=str(uuid.uuid4()),
        customer_id=customer_id,
        artisan_id=artisan_id,
        total=money_pb2.Money(currency_code="EUR", amount_cents=4550),
    )


async def pushed(pubsub: Any, count: int) -> list[tuple[str, str]]:
    """The first `count` messages pushed on the subscribed channels: (channel's user, title)."""
    found: list[tuple[str, str]] = []
    deadline = time.monotonic() + 15
    while len(found) < count and time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message is not None:
            document = json.loads(message["data"])
            found.append((document["recipient_id"], document["title"]))
    return found


async def titles(svc: RunningService, keys: Keys, user_id: str) -> list[str]:
    stub = pb_grpc.NotificationsServiceStub(svc.channel)
    listed = await stub.ListNotifications(
        pb.ListNotificationsRequest(page_size=50), metadata=token(keys, user_id, Role.CUSTOMER)
    )
    return sorted(n.title for n in listed.notifications)


async def test_an_event_for_two_people_is_stored_pushed_and_mailed_once_each(
    notifications: RunningService, keys: Keys, tmp_path: Path
) -> None:
    prefix = notifications.infra.settings.prefix
    pubsub = notifications.infra.redis.pubsub()
    await pubsub.subscribe(*(f"{prefix}:a4co:notifications:{user}" for user in ("c-1", "a-1")))
    welcome = identity.UserRegistered(user_id="c-1", email="ana@jaen.es", display_name="Ana")
    await publish_event(notifications, welcome, "c-1")
    await eventually(lambda: len(mail(tmp_path)) == 1, what="the welcome mailed")
    await publish_event(notifications, order_created("c-1", "a-1"), "o-1")
    await eventually(lambda: len(mail(tmp_path)) == 3, what="the order's two messages mailed")

    assert sorted(await pushed(pubsub, 3)) == [
        ("a-1", "Nuevo pedido"),
        ("c-1", "Hemos recibido tu pedido"),
        ("c-1", "¡Bienvenido a a4co!"),
    ]
    assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2) is None, "pushed once"
    sent = mail(tmp_path)
    assert [(m["to"], m["subject"]) for m in sent[1:]] == [
        ("ana@jaen.es", "Hemos recibido tu pedido"),
        ("a-1", "Nuevo pedido"),
    ], "in the order the messages were made, to the address when known"
    assert await titles(notifications, keys, "c-1") == ["Hemos recibido tu pedido", "¡Bienvenido a a4co!"]
    assert await titles(notifications, keys, "a-1") == ["Nuevo pedido"]
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_two_messages_of_one_event_to_one_person_are_kept_once(
    notifications: RunningService, keys: Keys, tmp_path: Path
) -> None:
    # An artisan buying from their own workshop: the event has a message for each role, both to
    # the same user, and a user hears of an event once.
    await publish_event(notifications, order_created("u-1", "u-1"), "o-2")
    await eventually(lambda: len(mail(tmp_path)) == 1, what="one message mailed")
    assert await titles(notifications, keys, "u-1") == ["Hemos recibido tu pedido"]
    count = await notifications.infra.pool.fetchval("SELECT count(*) FROM notifications")
    assert count == 1


@pytest_asyncio.fixture
async def retried_by_hand(
    start_notifications: StartNotifications, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningService]:
    """notifications whose own retries wait an hour, so that the test's are the only ones."""
    monkeypatch.setenv("A4CO_DELIVERY_RETRY_S", "3600")
    async with start_notifications() as svc:
        yield svc


async def test_a_failed_delivery_is_tried_again_until_it_succeeds_or_the_tries_run_out(
    retried_by_hand: RunningService, keys: Keys, tmp_path: Path
) -> None:
    """The mail server (here the file) fails: the message is stored and listed at once, and its
    delivery is tried again later instead of being lost."""
    notifications = retried_by_hand
    outbox = tmp_path / "mail" / "outbox.jsonl"
    outbox.mkdir(parents=True)  # a directory where the file goes: every delivery fails
    pool = notifications.infra.pool
    deps = handlers.Deps(pool, notifications.infra.redis, FileTransport(tmp_path / "mail"))
    welcome = identity.UserRegistered(user_id="c-9", email="eva@jaen.es", display_name="Eva")
    await publish_event(notifications, welcome, "c-9")

    async def waiting() -> list[Any]:
        return list(await pool.fetch("SELECT attempts, gave_up_at, last_error FROM undelivered"))

    await eventually(lambda: _one(waiting()), what="the failed delivery kept to be tried again")
    assert await titles(notifications, keys, "c-9") == ["¡Bienvenido a a4co!"]  # listed meanwhile
    [(attempts, gave_up, error)] = await waiting()
    assert (attempts, gave_up) == (1, None)
    assert error.startswith("IsADirectoryError")
    assert await handlers.deliver_due(deps) == 0, "not due yet: the first retry waits 30 s or so"

    await pool.execute("UPDATE undelivered SET next_attempt_at = now()")  # 30 s later
    assert await handlers.deliver_due(deps) == 0  # still failing: it waits longer
    [(attempts, gave_up, _)] = await waiting()
    assert (attempts, gave_up) == (2, None)

    outbox.rmdir()  # the mail server is back
    await pool.execute("UPDATE undelivered SET next_attempt_at = now()")
    assert await handlers.deliver_due(deps) == 1
    assert await waiting() == []
    assert [(m["to"], m["subject"]) for m in mail(tmp_path)] == [("eva@jaen.es", "¡Bienvenido a a4co!")]

    # Failing to the last try, it is given up on, and stays to say why.
    outbox.unlink()
    outbox.mkdir()
    await publish_event(notifications, order_created("c-9", "a-9"), "o-9")
    await eventually(lambda: _count(waiting(), 2), what="the order's two deliveries failed")
    await pool.execute(
        "UPDATE undelivered SET next_attempt_at = now(), attempts = $1", handlers.DELIVERY_ATTEMPTS - 1
    )
    deps = handlers.Deps(pool, notifications.infra.redis, FileTransport(tmp_path / "mail"))  # not open
    assert await handlers.deliver_due(deps) == 0
    assert all(gave_up is not None for _, gave_up, _ in await waiting())
    assert await handlers.deliver_due(deps) == 0  # given up on: not tried again


async def _one(rows: Awaitable[list[Any]]) -> bool:
    return len(await rows) == 1


async def _count(rows: Awaitable[list[Any]], count: int) -> bool:
    return len(await rows) == count


async def test_with_redis_down_the_messages_are_still_delivered(
    notifications: RunningService, tmp_path: Path
) -> None:
    """The push is for whoever listens now; a Redis outage must not stop the e-mail."""
    dead = Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.5)  # nothing listens there
    deps = handlers.Deps(notifications.infra.pool, dead, FileTransport(tmp_path / "down"))
    made = handlers._Made(  # what a consumer's transaction stages for one event
        deps, "a4co.orders.OrderCreated", str(uuid.uuid4()), [str(uuid.uuid4())],
        [Note("c-7", "Hemos recibido tu pedido", "Gracias.", "o-7")],
    )  # fmt: skip
    async with notifications.infra.pool.acquire() as conn, conn.transaction():
        after_commit = await handlers._store(conn, [made])
    assert after_commit is not None
    await after_commit()  # raised ConnectionError before, and mailed nothing
    sent = [json.loads(line) for line in (tmp_path / "down" / "outbox.jsonl").read_text().splitlines()]
    assert [(m["to"], m["subject"]) for m in sent] == [("c-7", "Hemos recibido tu pedido")]
    await dead.aclose()


async def test_a_user_marks_messages_read_and_sees_how_many_are_unread(
    notifications: RunningService, keys: Keys
) -> None:
    for n in range(4):
        await publish_event(notifications, order_created("c-1", "a-1"), f"o-{n}")
    stub = pb_grpc.NotificationsServiceStub(notifications.channel)
    me, artisan = token(keys, "c-1", Role.CUSTOMER), token(keys, "a-1", Role.ARTISAN)

    async def listed(
        who: tuple[tuple[str, str], ...], unread_only: bool = False
    ) -> pb.ListNotificationsResponse:
        return await stub.ListNotifications(
            pb.ListNotificationsRequest(unread_only=unread_only), metadata=who
        )

    await eventually(lambda: _holds(listed(me), 4), what="four messages stored")
    newest_first = list((await listed(me)).notifications)
    assert (await listed(me)).unread_count == 4
    assert not any(n.HasField("read_time") for n in newest_first)

    # The newest by id, then everything up to the second oldest by time; another user's id and a
    # message read already change nothing.
    theirs = (await listed(artisan)).notifications[0].notification_id
    first = await stub.MarkNotificationsRead(
        pb.MarkNotificationsReadRequest(notification_ids=[newest_first[0].notification_id, theirs]),
        metadata=me,
    )
    assert (first.marked_count, first.unread_count) == (1, 3)
    second = await stub.MarkNotificationsRead(
        pb.MarkNotificationsReadRequest(
            notification_ids=[newest_first[0].notification_id], read_through=newest_first[2].create_time
        ),
        metadata=me,
    )
    assert (second.marked_count, second.unread_count) == (2, 1)
    unread = await listed(me, unread_only=True)
    assert [n.notification_id for n in unread.notifications] == [newest_first[1].notification_id]
    assert unread.unread_count == 1
    read = {
        n.notification_id: n.read_time.ToDatetime()
        for n in (await listed(me)).notifications
        if n.HasField("read_time")
    }
    assert set(read) == {newest_first[i].notification_id for i in (0, 2, 3)}
    assert read[newest_first[0].notification_id] < read[newest_first[2].notification_id], (
        "kept its first read"
    )
    assert (await listed(artisan)).unread_count == 4, "the artisan's own messages untouched"
    # The README's command: everything up to the newest message seen.
    bearer = dict(me)["authorization"].removeprefix("Bearer ")
    through = newest_first[0].create_time.ToJsonString()
    answer = await call(
        notifications.address,
        "a4co.notifications.v1.NotificationsService/MarkNotificationsRead",
        {"read_through": through},
        token=bearer,
    )
    assert answer == {"marked_count": 1}, "unread_count 0 is left out of the JSON, as proto3 does"

    bad = await failure(stub.MarkNotificationsRead(pb.MarkNotificationsReadRequest(), metadata=me))
    assert details_of(bad)[1] == [("notification_ids", "name the messages read, or set read_through")]
    bad = await failure(
        stub.MarkNotificationsRead(pb.MarkNotificationsReadRequest(notification_ids=["nope"]), metadata=me)
    )
    assert [f for f, _ in details_of(bad)[1]] == ["notification_ids[0]"]
    many = [str(uuid.uuid4()) for _ in range(101)]
    bad = await failure(
        stub.MarkNotificationsRead(pb.MarkNotificationsReadRequest(notification_ids=many), metadata=me)
    )
    assert details_of(bad)[1] == [("notification_ids", "at most 100")]


async def test_unread_pages_follow_on_while_messages_are_read_and_arrive(
    notifications: RunningService, keys: Keys
) -> None:
    """Each page starts after the last message of the one before (decision 41): marking a page
    read, or a new message arriving, neither skips nor repeats a message of the next page."""
    stub = pb_grpc.NotificationsServiceStub(notifications.channel)
    me = token(keys, "c-1", Role.CUSTOMER)

    def listed(page_token: str = "", unread_only: bool = True) -> Awaitable[pb.ListNotificationsResponse]:
        request = pb.ListNotificationsRequest(page_size=2, page_token=page_token, unread_only=unread_only)
        return stub.ListNotifications(request, metadata=me)

    for n in range(5):
        await publish_event(notifications, order_created("c-1", "a-1"), f"o-{n}")
    everything = pb.ListNotificationsRequest(page_size=10)
    await eventually(lambda: _holds(stub.ListNotifications(everything, metadata=me), 5), what="five stored")
    newest_first = [
        n.notification_id for n in (await stub.ListNotifications(everything, metadata=me)).notifications
    ]

    first = await listed()
    assert [n.notification_id for n in first.notifications] == newest_first[:2]
    await stub.MarkNotificationsRead(
        pb.MarkNotificationsReadRequest(notification_ids=newest_first[:2]), metadata=me
    )
    await publish_event(notifications, order_created("c-1", "a-1"), "o-5")
    await eventually(
        lambda: _holds(stub.ListNotifications(everything, metadata=me), 6), what="a sixth stored"
    )
    second = await listed(first.next_page_token)
    assert [n.notification_id for n in second.notifications] == newest_first[2:4]
    assert second.unread_count == 4, "the three left and the new one"
    third = await listed(second.next_page_token)
    assert ([n.notification_id for n in third.notifications], third.next_page_token) == (newest_first[4:], "")
    other = await failure(listed(first.next_page_token, unread_only=False))
    assert details_of(other)[1] == [("page_token", OTHER_FILTERS)]


async def _holds(response: Awaitable[pb.ListNotificationsResponse], expected: int) -> bool:
    return len((await response).notifications) == expected


def reset_requested(user_id: str, email: str, code: str) -> identity.PasswordResetRequested:
    expires = datetime.now(UTC) + timedelta(minutes=30)
    return identity.PasswordResetRequested(
        user_id=user_id, email=email, display_name="Luz", code=code, expire_time=to_timestamp(expires)
    )


async def test_a_reset_code_is_mailed_never_listed_nor_pushed_and_forgotten_once_sent(
    notifications: RunningService, keys: Keys, tmp_path: Path
) -> None:
    prefix = notifications.infra.settings.prefix
    pubsub = notifications.infra.redis.pubsub()
    await pubsub.subscribe(f"{prefix}:a4co:notifications:c-5")
    await publish_event(
        notifications, reset_requested("c-5", "luz@jaen.es", "7KQ2M-9XH4P"), "c-5", ttl_s=1800
    )
    await eventually(lambda: len(mail(tmp_path)) == 1, what="the code mailed")
    [sent] = mail(tmp_path)
    assert (sent["to"], sent["subject"]) == ("luz@jaen.es", "Restablecer tu contraseña")
    assert "7KQ2M-9XH4P" in sent["body"]
    # Pushed and listed without the code: a session of the account is not its mailbox.
    message = None
    deadline = time.monotonic() + 15
    while message is None and time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
    assert message is not None
    assert "7KQ2M" not in message["data"]
    assert "por correo" in json.loads(message["data"])["body"]
    stub = pb_grpc.NotificationsServiceStub(notifications.channel)
    listed = await stub.ListNotifications(
        pb.ListNotificationsRequest(page_size=50), metadata=token(keys, "c-5", Role.CUSTOMER)
    )
    assert [n.title for n in listed.notifications] == ["Restablecer tu contraseña"]
    assert "7KQ2M" not in str(listed)
    # Once mailed, the code is not kept.
    pool = notifications.infra.pool

    async def forgotten() -> bool:
        return bool(await pool.fetchval("SELECT count(*) = 0 FROM notifications WHERE mailed IS NOT NULL"))

    await eventually(forgotten, what="the mailed code forgotten")
    assert await pool.fetchval("SELECT email FROM contacts WHERE user_id = 'c-5'") == "luz@jaen.es"
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_a_reset_code_that_failed_to_leave_is_kept_until_mailed_or_given_up_on(
    retried_by_hand: RunningService, tmp_path: Path
) -> None:
    notifications = retried_by_hand
    outbox = tmp_path / "mail" / "outbox.jsonl"
    outbox.mkdir(parents=True)  # every delivery fails
    pool = notifications.infra.pool
    deps = handlers.Deps(pool, notifications.infra.redis, FileTransport(tmp_path / "mail"))
    await publish_event(
        notifications, reset_requested("c-6", "sol@jaen.es", "ABCDE-12345"), "c-6", ttl_s=1800
    )
    await publish_event(
        notifications, reset_requested("c-7", "mar@jaen.es", "FGHJK-67890"), "c-7", ttl_s=1800
    )

    async def kept() -> list[str]:
        return [
            r["mailed"] for r in await pool.fetch("SELECT mailed FROM notifications ORDER BY recipient_id")
        ]

    async def waiting() -> bool:
        return bool(await pool.fetchval("SELECT count(*) = 2 FROM undelivered"))

    await eventually(waiting, what="both deliveries failed")
    assert [("ABCDE-12345" in m, "FGHJK-67890" in m) for m in await kept()] == [(True, False), (False, True)]
    # c-6's is given up on at its last try; c-7's is mailed when the mail server is back.
    await pool.execute(
        "UPDATE undelivered u SET next_attempt_at = now(), attempts = $1 FROM notifications n"
        " WHERE n.notification_id = u.notification_id AND n.recipient_id = 'c-6'",
        handlers.DELIVERY_ATTEMPTS - 1,
    )
    assert await handlers.deliver_due(deps) == 0
    assert (await kept())[0] is None
    outbox.rmdir()
    await pool.execute("UPDATE undelivered SET next_attempt_at = now() WHERE gave_up_at IS NULL")
    assert await handlers.deliver_due(deps) == 1
    assert await kept() == [None, None]
    [sent] = mail(tmp_path)
    assert sent["to"] == "mar@jaen.es"
    assert "FGHJK-67890" in sent["body"]
