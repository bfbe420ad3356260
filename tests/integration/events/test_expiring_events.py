"""An event declared `expires` leaves its stream, and its dead letter the DLQ, when its time is up
(decision 51); every other event stays for the stream's retention."""

from __future__ import annotations

from google.protobuf.message import Message

from a4co.identity.events.v1 import identity_events_pb2
from services.platform.events.consumer import HandlerContext
from services.platform.events.dlq import DeadLetterQueue
from tests.integration.events.rig import Rig, order_created, running
from tests.support.waiting import eventually


async def test_an_expiring_event_and_its_dead_letter_leave_their_streams_when_their_time_is_up(
    rig: Rig,
) -> None:
    async def no_mail_server(event: Message, ctx: HandlerContext) -> None:
        raise ConnectionRefusedError("the mail server refused the connection")

    consumer = await rig.consumer(
        "notifications", {identity_events_pb2.PasswordResetRequested: no_mail_server}, stream="IDENTITY"
    )
    reset = identity_events_pb2.PasswordResetRequested(
        user_id="u-1", email="rosa@example.es", code="7KQ2M9XH4P"
    )
    async with rig.pool.acquire() as conn, conn.transaction():
        out = await rig.writer.add(conn, reset, aggregate_id="u-1", ttl_s=6)
    await rig.commit(order_created("o-1"), "o-1")
    assert out.headers["Nats-TTL"] == "6s"
    identity, orders = rig.topology.stream("IDENTITY"), rig.topology.stream("ORDERS")
    dlq = DeadLetterQueue(rig.js, rig.topology)
    async with running(rig.relay()):
        await eventually(lambda: consumer.stats.dead_lettered == 1, what="dead-lettered within its time")
    [letter] = await dlq.browse()
    assert (letter.event_id, letter.headers["Nats-TTL"]) == (out.event_id, "6s"), "the letter expires alike"

    async def left() -> bool:
        kept = (await rig.js.stream_info(identity)).state.messages
        return kept == 0 and await dlq.depth() == 0

    await eventually(left, timeout=20, what="the event gone from IDENTITY and its letter from the DLQ")
    assert (await rig.js.stream_info(orders)).state.messages == 1, "an event not declared expires stays"
