"""Create or update the JetStream streams declared in the contracts; read one whole.

In a NATS cluster (decision 64) JetStream's API may not answer at once: a stream kept on three
servers is created by the cluster's meta leader and then elects a leader of its own, and while a
server is lost the others elect new leaders. Services starting together (`make run` starts eleven)
ask for all of that at the same moment. `until_answered` asks again, with backoff, while JetStream
says "not now" (no answer in time, 503, or no servers to place a stream on), for up to a minute,
instead of failing the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection
from typing import Any, TypeVar

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

from services.platform.events.registry import EventRegistry, StreamDef
from services.platform.events.topology import Topology
from services.platform.resilience import Backoff
from services.platform.settings import StreamSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long a JetStream API request is asked again while JetStream answers "not now", and how.
ANSWER_DEADLINE_S = 60.0
ASKING_AGAIN = Backoff(first_s=0.25, cap_s=4.0)
# "No suitable peers for placement": a stream to keep on more servers than answer now (one
# restarting, say).
NO_PLACEMENT = 10005
# "Stream not found" (a message that is not there: 10037).
STREAM_NOT_FOUND = 10059


class StreamMissingError(LookupError):
    """A stream of the deployment is not on NATS: `stream` is its name before the prefix."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.stream = stream


def raise_if_stream_missing(exc: NotFoundError, stream: str) -> None:
    """Raise StreamMissingError for `stream` (its declared name) if JetStream's `exc` says the
    stream, rather than a message or a consumer of it, is not there."""
    if exc.err_code == STREAM_NOT_FOUND:
        raise StreamMissingError(stream) from None


# Reading a whole stream: messages asked for at a time; how long a request waits for some when the
# consumer counted more (they may have left the stream since: max age, a purge); how long the
# server keeps a reader's consumer that nobody uses (a command killed while it read).
READ_BATCH = 1000
READ_FETCH_TIMEOUT_S = 5.0
READ_IDLE_S = 30.0
# How long a reader's messages are asked for again while nobody answers for its consumer (in a
# NATS cluster, a consumer just made may not listen yet on its server).
READ_ANSWER_DEADLINE_S = 15.0


async def read_stream(
    js: JetStreamContext, topology: Topology, stream: str, *, batch: int = READ_BATCH
) -> AsyncGenerator[Msg, None]:
    """Each message of the deployment's stream `stream` (its declared name), oldest first, through
    an ephemeral pull consumer of the reader's own that acknowledges nothing, kept in memory and
    deleted at the end: a fetch brings up to `batch` messages in one request, where reading them
    one by one (`get_msg`) costs a request and a parse of its headers by Python's e-mail parser
    each. Raises StreamMissingError when the stream is not there. Close it (`aclosing`) when
    leaving before its end, so the consumer goes at once."""
    name, consumer = topology.stream(stream), f"reader_{uuid.uuid4().hex}"
    config = ConsumerConfig(
        name=consumer,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.NONE,
        mem_storage=True,
        inactive_threshold=READ_IDLE_S,
    )
    try:
        pending = (await js.add_consumer(name, config)).num_pending
    except NotFoundError as exc:
        raise_if_stream_missing(exc, stream)
        raise
    sub = await js.pull_subscribe_bind(consumer, stream=name)

    async def fetch() -> list[Msg]:
        try:
            return await sub.fetch(batch, timeout=READ_FETCH_TIMEOUT_S)
        except TimeoutError:
            return []  # those it counted have left the stream since

    try:
        while pending:
            # In a cluster the consumer made may not listen yet on its server: "no responders"
            # (503), asked again. (A NATS without JetStream fails the consumer's making, at once.)
            messages = await until_answered(f"reading {name}", fetch, READ_ANSWER_DEADLINE_S)
            if not messages:
                return
            for msg in messages:
                yield msg
            pending = messages[-1].metadata.num_pending
    finally:
        await sub.unsubscribe()
        with contextlib.suppress(nats.errors.Error):  # else gone once idle: no need to say
            await js.delete_consumer(name, consumer)


async def until_answered(
    what: str, request: Callable[[], Awaitable[T]], deadline_s: float = ANSWER_DEADLINE_S
) -> T:
    """`request()`'s answer, asked again while JetStream does not answer in time, answers 503
    (temporarily unavailable: a cluster with no meta leader yet) or cannot place a stream on as
    many servers as asked (one is offline), each time after a growing pause, for up to
    `deadline_s`; then its last error. Any other error is raised at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    attempt = 0
    while True:
        try:
            return await request()
        except (nats.errors.TimeoutError, ServiceUnavailableError, BadRequestError) as exc:
            if isinstance(exc, BadRequestError) and exc.err_code != NO_PLACEMENT:
                raise
            attempt += 1
            pause = ASKING_AGAIN.delay(attempt)
            if loop.time() + pause > deadline:
                raise
            log.warning(
                "%s: JetStream did not answer (%s); asking again in %.1f s",
                what,
                exc or type(exc).__name__,
                pause,
            )
            await asyncio.sleep(pause)


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
    only: Collection[str] | None = None,
) -> list[str]:
    """Create every declared stream (or those named in `only`), or update it to the declared
    configuration; idempotent.

    Returns the server-side names of the streams.
    """
    names = []
    for stream in registry.streams:
        if only is not None and stream.name not in only:
            continue
        config = stream_config(stream, topology, settings)
        assert config.name is not None
        await until_answered(f"stream {config.name}", functools.partial(_ensure, js, config))
        names.append(config.name)
    return names


async def _ensure(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or update it where its configuration differs from `config` (an update
    of a replicated stream goes through the cluster's meta leader: every service starting would
    send one for every stream)."""
    assert config.name is not None
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
        log.info(
            "created stream %s for %s with %d replicas", config.name, config.subjects, config.num_replicas
        )
        return
    changed = _differences(info.config, config)
    if changed:
        await js.update_stream(config)
        log.info("updated stream %s: %s", config.name, ", ".join(changed))


def _differences(current: StreamConfig, wanted: StreamConfig) -> list[str]:
    """The settings `wanted` sets that `current` does not have as set."""
    now: dict[str, Any] = current.as_dict()
    return sorted(key for key, value in wanted.as_dict().items() if now.get(key) != value)
