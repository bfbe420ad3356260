"""The consumer's pull requests against the real JetStream: batches, waits and errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
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


async def test_a_fetch_returns_what_is_available_up_to_the_batch_in_order(
    nc: NATS, prefix: str, stream: str
) -> None:
    await publish(nc, prefix, 5)
    puller = Puller(nc, stream, "worker")
    await puller.start()
    first = await puller.fetch(3, timeout=2)
    second = await puller.fetch(3, timeout=2)
    assert [m.data for m in first] == [b"0", b"1", b"2"]
    assert [m.data for m in second] == [b"3", b"4"]
    for msg in [*first, *second]:
        await msg.ack()
    info = await nc.jetstream().consumer_info(stream, "worker")
    assert info.num_pending == 0
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

    async def waiting() -> bool:  # the server holds the fetch's second, waiting request
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
