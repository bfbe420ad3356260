"""Streams are created from the contracts' options, idempotently."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import ServiceUnavailableError

from services.platform.events import streams
from services.platform.events.dlq import DeadLetterQueue
from services.platform.events.registry import EventRegistry
from services.platform.events.streams import StreamMissingError, ensure_streams, read_stream
from services.platform.events.topology import DLQ_STREAM, Topology
from services.platform.settings import StreamSettings
from tests.integration.events.rig import consumers_on


async def test_every_declared_stream_exists_with_its_subjects(
    nc: NATS, registry: EventRegistry, topology: Topology
) -> None:
    js = nc.jetstream()
    settings = StreamSettings(duplicate_window_s=60, max_age_s=3600)
    names = await ensure_streams(js, registry, topology, settings)

    assert sorted(names) == sorted(topology.stream(s.name) for s in registry.streams)
    assert topology.stream(DLQ_STREAM) in names
    for stream in registry.streams:
        info = await js.stream_info(topology.stream(stream.name))
        assert info.config.subjects == topology.stream_subjects(stream)
        assert info.config.duplicate_window == 60
        assert info.config.max_age == 3600


async def test_ensuring_twice_changes_nothing_and_updates_limits(
    nc: NATS, registry: EventRegistry, topology: Topology
) -> None:
    js = nc.jetstream()
    await ensure_streams(js, registry, topology, StreamSettings())
    again = await ensure_streams(js, registry, topology, StreamSettings(max_age_s=600))
    info = await js.stream_info(again[0])
    assert info.config.max_age == 600
    assert len({n for n in again}) == len(registry.streams)


def test_the_dead_letter_subject_falls_in_the_declared_dlq_stream(registry: EventRegistry) -> None:
    from services.platform.events.registry import subject_matches

    topology = Topology()
    subject = topology.dead_letter_subject("payments", "a4co.orders.order.created")
    assert any(subject_matches(subject, s) for s in registry.stream(DLQ_STREAM).subjects)


async def _dead_letters(js: JetStreamContext, topology: Topology, n: int) -> list[int]:
    """`n` messages on the dead-letter stream: their sequences."""
    subject = topology.subject("a4co.dlq.payments.a4co.orders.order.created")
    return [(await js.publish(subject, f"letter {i}".encode())).seq for i in range(n)]


async def test_a_stream_is_read_whole_in_batches_and_its_reader_deleted(
    nc: NATS, registry: EventRegistry, topology: Topology
) -> None:
    js = nc.jetstream()
    await ensure_streams(js, registry, topology, StreamSettings(), only={DLQ_STREAM})
    sequences = await _dead_letters(js, topology, 7)
    await js.delete_msg(topology.stream(DLQ_STREAM), sequences[3])
    await js.delete_msg(topology.stream(DLQ_STREAM), sequences[-1])
    read = [m async for m in read_stream(js, topology, DLQ_STREAM, batch=2)]
    assert [m.data for m in read] == [b"letter 0", b"letter 1", b"letter 2", b"letter 4", b"letter 5"]
    assert [m.metadata.sequence.stream for m in read] == [*sequences[:3], *sequences[4:6]]
    assert await consumers_on(js, topology.stream(DLQ_STREAM)) == []
    assert [m async for m in read_stream(js, topology, DLQ_STREAM)] != [], "read again from the start"


async def test_an_empty_stream_reads_as_nothing_at_once(
    nc: NATS, registry: EventRegistry, topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    js = nc.jetstream()
    await ensure_streams(js, registry, topology, StreamSettings(), only={DLQ_STREAM})
    monkeypatch.setattr(streams, "READ_FETCH_TIMEOUT_S", 60.0)  # asked for nothing: no wait for it

    async def everything() -> list[object]:
        return [m async for m in read_stream(js, topology, DLQ_STREAM)]

    assert await asyncio.wait_for(everything(), timeout=30) == []


async def test_messages_that_leave_while_read_end_it(
    nc: NATS, registry: EventRegistry, topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream purged after the first batch: what the consumer counted is gone, and reading
    ends after one request that waits READ_FETCH_TIMEOUT_S, with what it read."""
    js = nc.jetstream()
    await ensure_streams(js, registry, topology, StreamSettings(), only={DLQ_STREAM})
    await _dead_letters(js, topology, 5)
    monkeypatch.setattr(streams, "READ_FETCH_TIMEOUT_S", 0.5)
    messages = read_stream(js, topology, DLQ_STREAM, batch=2)
    first = [await anext(messages), await anext(messages)]
    await js.purge_stream(topology.stream(DLQ_STREAM))
    rest = [m async for m in messages]
    assert [m.data for m in first + rest] == [b"letter 0", b"letter 1"]
    assert await consumers_on(js, topology.stream(DLQ_STREAM)) == []


async def test_a_reader_closed_before_the_end_is_deleted_at_once(
    nc: NATS, registry: EventRegistry, topology: Topology
) -> None:
    js = nc.jetstream()
    await ensure_streams(js, registry, topology, StreamSettings(), only={DLQ_STREAM})
    await _dead_letters(js, topology, 5)
    async with contextlib.aclosing(read_stream(js, topology, DLQ_STREAM, batch=2)) as messages:
        assert (await anext(messages)).data == b"letter 0"
        assert len(await consumers_on(js, topology.stream(DLQ_STREAM))) == 1
    assert await consumers_on(js, topology.stream(DLQ_STREAM)) == []
    # and so does the dead-letter queue's, when a page is full before the stream ends
    assert len(await DeadLetterQueue(js, topology).browse(limit=2)) == 2
    assert await consumers_on(js, topology.stream(DLQ_STREAM)) == []


async def test_a_stream_that_is_not_there_is_said(nc: NATS, topology: Topology) -> None:
    with pytest.raises(StreamMissingError) as missing:
        [m async for m in read_stream(nc.jetstream(), topology, "ORDERS")]
    assert missing.value.stream == "ORDERS"


async def test_a_reader_whose_consumer_does_not_listen_yet_is_asked_again(
    nc: NATS, registry: EventRegistry, topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in a NATS cluster, where a consumer just made may not listen yet on its server: its first
    requests have no responders (503), and are asked again until it does."""
    js = nc.jetstream()
    await ensure_streams(js, registry, topology, StreamSettings(), only={DLQ_STREAM})
    await _dead_letters(js, topology, 3)
    bind = js.pull_subscribe_bind
    later: list[asyncio.Task[object]] = []

    async def not_listening_yet(consumer: str, stream: str) -> object:
        config = (await js.consumer_info(stream, consumer)).config
        await js.delete_consumer(stream, consumer)  # nobody answers for it now

        async def made_again() -> None:
            await asyncio.sleep(0.5)  # the cluster's lag, staged
            await js.add_consumer(stream, config)

        later.append(asyncio.ensure_future(made_again()))
        return await bind(consumer, stream=stream)

    monkeypatch.setattr(js, "pull_subscribe_bind", not_listening_yet)
    read = [m.data async for m in read_stream(js, topology, DLQ_STREAM)]
    assert read == [b"letter 0", b"letter 1", b"letter 2"]
    assert later[0].done()


async def test_a_reader_whose_consumer_never_listens_gives_up(
    nc: NATS, registry: EventRegistry, topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    js = nc.jetstream()
    await ensure_streams(js, registry, topology, StreamSettings(), only={DLQ_STREAM})
    await _dead_letters(js, topology, 1)
    bind = js.pull_subscribe_bind

    async def never_listening(consumer: str, stream: str) -> object:
        await js.delete_consumer(stream, consumer)
        return await bind(consumer, stream=stream)

    monkeypatch.setattr(js, "pull_subscribe_bind", never_listening)
    monkeypatch.setattr(streams, "READ_ANSWER_DEADLINE_S", 1.0)
    with pytest.raises(ServiceUnavailableError):
        [m async for m in read_stream(js, topology, DLQ_STREAM)]
