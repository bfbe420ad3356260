"""Create or update the JetStream streams declared in the contracts."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from services.platform.events.registry import EventRegistry, StreamDef
from services.platform.events.topology import Topology
from services.platform.settings import StreamSettings

log = logging.getLogger(__name__)


def stream_config(stream: StreamDef, topology: Topology, settings: StreamSettings) -> StreamConfig:
    """The server-side configuration of one declared stream."""
    return StreamConfig(
        name=topology.stream(stream.name),
        description=stream.description,
        subjects=topology.stream_subjects(stream),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=settings.max_age_s,
        max_bytes=settings.max_bytes,
        duplicate_window=settings.duplicate_window_s,
        num_replicas=settings.replicas,
        allow_direct=True,
        # A message may say when it leaves (a Nats-TTL header): those of the events declared
        # `expires`, and their copies in the dead-letter stream and in replays (decision 51).
        allow_msg_ttl=True,
    )


async def ensure_streams(
    js: JetStreamContext,
    registry: EventRegistry,
    topology: Topology,
    settings: StreamSettings,
) -> list[str]:
    """Create every declared stream, or update it to the declared configuration; idempotent.

    Returns the server-side names of the streams.
    """
    names = []
    for stream in registry.streams:
        config = stream_config(stream, topology, settings)
        assert config.name is not None
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
            log.info("created stream %s for %s", config.name, config.subjects)
        else:
            await js.update_stream(config)
        names.append(config.name)
    return names
