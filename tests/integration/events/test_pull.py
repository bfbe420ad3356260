"""The consumer's pull requests against the real JetStream: batches, waits and errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from services.platform.events.pull import Puller, PullError
from tests.support.waiting import eventually


@pytest_asyncio.fixture
async def stream(nc: NATS, prefix: str) -> AsyncIterator[str]:
    js = nc.jetstream()
    name = f"{prefix}_PULL"
    await js.add_stream(StreamConfig(name=name, subjects=[f"{prefix}.pull.>"]))
    await js.add_consumer(name, ConsumerConfig(durable_name="worker", ack_policy=AckPolicy.EXPLICIT))
    yield name
    await js.delete_stream(name)


async def publish(nc: NATS, prefix: str, count: int, start: int = 0) -> None:
    js = nc.jetstream()
    for i in range(start, start + count):
        await js.publish(f"{prefix}.pull.item", str(i).encode())


async def test_fetches_return_what_arrived_in_order_never_more_than_the_batch(
    nc: NATS, prefix: str, stream: str
) -> None:
    await publish(nc, prefix, 5)
    puller = Puller(nc, stream, "worker")
    await puller.start()
    got: list[Msg] = []
    while len(got) < 5:
        batch = await puller.fetch(3, timeout=2)
        assert 1 <= len(batch) <= 3
        got += batch
    assert [m.data for m in got] == [b"0", b"1", b"2", b"3", b"4"]
    for msg in got:
        await msg.ack()
    info = await nc.jetstream().consumer_info(stream, "worker")
    assert info.num_pending == 0
    await puller.stop()


async def test_events_one_at_a_time_are_delivered_on_a_standing_credit(
    nc: NATS, prefix: str, stream: str
) -> None:
    # nats-py's way (a no_wait request, then a waiting one when nothing came) sent a request or
    # two per fetch: 20 for these 20 messages. A standing credit of twice the batch, topped up when
    # one batch of it is left, asks once per 10 here.
    seen: list[bytes] = []

    async def count(msg: Msg) -> None:
        seen.append(msg.data)

    spy = await nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.worker", cb=count)
    puller = Puller(nc, stream, "worker", expires_s=30)
    await puller.start()
    for i in range(20):
        await publish(nc, prefix, 1, start=i)
        (msg,) = await puller.fetch(10, timeout=5)
        assert msg.data == str(i).encode()
        await msg.ack()
    await eventually(lambda: len(seen) == puller.requests, what="every request seen")
    assert puller.requests <= 3
    assert json.loads(seen[0])["batch"] == 20
    await spy.unsubscribe()
    await puller.stop()


async def test_the_credit_bounds_what_the_server_sends_ahead(nc: NATS, prefix: str, stream: str) -> None:
    await publish(nc, prefix, 50)
    puller = Puller(nc, stream, "worker", expires_s=30)
    await puller.start()
    first = await puller.fetch(5, timeout=5)

    async def held() -> int:
        return int((await nc.jetstream().consumer_info(stream, "worker")).num_ack_pending or 0)

    # Twice the batch is held ahead of what was taken, and no more.
    await eventually(lambda: puller.pending == 10, what="the credit delivered")
    assert await held() == len(first) + 10
    assert len(puller.take(100)) == 10
    await puller.stop()


class Deaf(Puller):
    """A puller that never hears that a request ended, as after a lost status."""

    async def _on_message(self, msg: Msg) -> None:
        if (msg.headers or {}).get("Status") != "408":
            await super()._on_message(msg)


@pytest.mark.parametrize(
    ("kind", "renewals"),
    [
        (Puller, 3),  # the 408 that ends each request says so: one request per lifetime of 0.2 s
        (Deaf, 2),  # no 408 heard: each request is taken as ended 0.05 s after its lifetime
    ],
)
async def test_an_ended_request_is_renewed_and_requests_do_not_pile_up(
    nc: NATS, prefix: str, stream: str, kind: type[Puller], renewals: int
) -> None:
    puller = kind(nc, stream, "worker", expires_s=0.2)
    await puller.start()
    assert await puller.fetch(10, timeout=0.9) == []
    assert puller.requests >= renewals
    info = await nc.jetstream().consumer_info(stream, "worker")
    assert info.num_waiting <= 1
    await publish(nc, prefix, 1)
    assert [m.data for m in await puller.fetch(10, timeout=5)] == [b"0"]
    await puller.stop()


class SlowToAsk(Puller):
    """A puller whose first request is answered while it is still being sent."""

    async def _top_up(self, batch: int) -> None:
        first = self.requests == 0
        await super()._top_up(batch)
        if first:
            await eventually(lambda: self.pending > 0, what="the answer, during the request")


async def test_a_message_that_arrives_while_a_request_is_sent_is_not_missed(
    nc: NATS, prefix: str, stream: str
) -> None:
    await publish(nc, prefix, 1)
    puller = SlowToAsk(nc, stream, "worker", expires_s=30)
    await puller.start()
    async with asyncio.timeout(10):  # missed, the fetch would wait out the request's 30 s
        got = await puller.fetch(10, timeout=30)
    assert [m.data for m in got] == [b"0"]
    await puller.stop()


async def test_an_empty_stream_gives_an_empty_batch_after_the_window(nc: NATS, stream: str) -> None:
    puller = Puller(nc, stream, "worker")
    await puller.start()
    assert await puller.fetch(10, timeout=0.3) == []
    await puller.stop()


async def test_a_waiting_fetch_returns_with_the_first_message_that_arrives(
    nc: NATS, prefix: str, stream: str
) -> None:
    puller = Puller(nc, stream, "worker")
    await puller.start()
    fetching = asyncio.ensure_future(puller.fetch(10, timeout=30))

    async def waiting() -> bool:  # the server holds the fetch's request
        return bool((await nc.jetstream().consumer_info(stream, "worker")).num_waiting)

    await eventually(waiting, what="a waiting pull request")
    await publish(nc, prefix, 1)
    got = await asyncio.wait_for(fetching, 10)
    assert [m.data for m in got] == [b"0"]
    await puller.stop()


async def test_unacknowledged_messages_come_back_after_ack_wait(nc: NATS, prefix: str, stream: str) -> None:
    js = nc.jetstream()
    await js.add_consumer(
        stream, ConsumerConfig(durable_name="slow", ack_policy=AckPolicy.EXPLICIT, ack_wait=1.0)
    )
    await publish(nc, prefix, 1)
    puller = Puller(nc, stream, "slow")
    await puller.start()
    (first,) = await puller.fetch(1, timeout=2)
    again = await puller.fetch(1, timeout=10)  # not acked: the server sends it again
    assert [m.data for m in again] == [first.data]
    assert again[0].metadata.num_delivered == 2
    await puller.stop()


async def test_a_deleted_consumer_ends_the_fetch_with_an_error(nc: NATS, stream: str) -> None:
    puller = Puller(nc, stream, "worker")
    await puller.start()
    await nc.jetstream().delete_consumer(stream, "worker")
    with pytest.raises(PullError):
        await puller.fetch(10, timeout=2)
    await puller.stop()


async def test_a_pull_nobody_answers_ends_with_one_line_saying_so(nc: NATS, stream: str) -> None:
    """A consumer that is not there (or whose leader a cluster is electing): 503, said in one line,
    not with the status's other headers after a line break."""
    puller = Puller(nc, stream, "nobody")
    await puller.start()
    try:
        with pytest.raises(PullError) as ended:
            await puller.fetch(10, timeout=2)
    finally:
        await puller.stop()
    assert ended.value.status == "503"
    assert ended.value.consumer_gone
    assert (
        str(ended.value)
        == f"pull request on $JS.API.CONSUMER.MSG.NEXT.{stream}.nobody ended: 503 No Responders"
    )
