"""Streams are created from the contracts' options, idempotently."""

from __future__ import annotations

from nats.aio.client import Client as NATS

from services.platform.events.registry import EventRegistry
from services.platform.events.streams import ensure_streams
from services.platform.events.topology import DLQ_STREAM, Topology
from services.platform.settings import StreamSettings


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
