"""Run one service process: connect to the servers, apply its schema, serve gRPC, relay its
outbox, consume its subscriptions, export metrics, and stop gracefully on SIGTERM or SIGINT.

Each service's `__main__` is the composition root: it reads its settings, builds its handlers and
clients, and hands them to `run_service`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from google.protobuf.message import Message
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from redis.asyncio import BlockingConnectionPool

from services.platform import keepalive
from services.platform.auth import RedisRevocations, RevocationFallback, TokenVerifier
from services.platform.db import create_pool
from services.platform.events.codec import EventCodec, check_max_payload
from services.platform.events.connection import connect as connect_nats
from services.platform.events.consumer import Handler, QueueConsumer, Selective
from services.platform.events.outbox import OutboxRelay, OutboxWriter
from services.platform.events.permissions import produced_streams, streams_used
from services.platform.events.registry import EventRegistry, load_registry
from services.platform.events.streams import ensure_streams
from services.platform.events.tables import keep_inbox_pruned
from services.platform.events.topology import Topology
from services.platform.grpc.client import PeerClient
from services.platform.grpc.interceptor import MethodPolicy, PlatformInterceptor
from services.platform.grpc.server import GrpcServer, ListenError, Registration
from services.platform.grpc.sessions import ask_identity
from services.platform.grpc.tls import Certificates, nats_ssl_context
from services.platform.metrics_endpoint import serve_metrics
from services.platform.redis_circuit import GuardedRedis, redis_breaker
from services.platform.resilience import cancel_and_wait
from services.platform.settings import Settings

log = logging.getLogger(__name__)

REDIS_CONNECTIONS = 64
# How long a Redis command (or connection) may wait for Redis's answer: a command takes well under
# a millisecond, so this is a stalled server (docs/operations.md).
REDIS_TIMEOUT_S = 0.5

Subscriptions = Mapping[str, Mapping[type[Message], Handler | Selective]]


def redis_pool(url: str) -> BlockingConnectionPool:
    """The connections of a service's Redis client, its commands' and its pub/sub listeners'.

    A burst of calls waits for a free connection (up to 5 s) instead of failing at once with "Too
    many connections", which is what redis-py's default pool does past 100. A Redis that stalls
    (rather than refusing connections) fails a command after REDIS_TIMEOUT_S, as one that is down
    does, so the call falls back to PostgreSQL instead of waiting until its caller's deadline.

    The pub/sub listeners' blocking reads have no timeout (redis-py reads them without one): over
    TCP, the connections get the same dead-peer detection as PostgreSQL's (decision 76), so that a
    listener whose server vanished fails within 30 s even after it sent a SUBSCRIBE that nothing
    acknowledged, which redis-py's own keepalive (probes only while nothing is unacknowledged)
    leaves to the kernel's retransmissions. A Unix socket takes no TCP option (nor needs one).
    """
    tcp: dict[str, Any] = {}
    if not url.startswith("unix:"):
        tcp = {"socket_keepalive": True, "socket_keepalive_options": keepalive.tcp_options()}
    return BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_CONNECTIONS,
        timeout=5,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        decode_responses=True,
        **tcp,
    )


@dataclass
class Infrastructure:
    """The connections of one service process."""

    settings: Settings
    pool: asyncpg.Pool
    nc: NatsClient
    js: JetStreamContext
    redis: GuardedRedis
    registry: EventRegistry
    topology: Topology
    codec: EventCodec
    outbox: OutboxWriter
    revocations: RedisRevocations
    # Set when the NATS client is closed: by `close`, or underneath a running service by a protocol
    # error from the server, after which nats-py never reconnects (`run_until_signalled` exits).
    nats_closed: asyncio.Event = field(default_factory=asyncio.Event)
    # Who says whether a session has ended while Redis fails (decision 34): identity's ValidateToken
    # where A4CO_PEER_IDENTITY is set; identity sets its own (its sessions table) in its build.
    revocation_fallback: RevocationFallback | None = None
    # The TLS files as last read, followed while the service runs (decisions 58 and 59).
    certificates: Certificates = field(default_factory=Certificates)
    # Whether JetStream answered the last health check: in a NATS cluster that has lost most of
    # its servers, the connection to one left stays up while nothing can be stored (decision 64).
    jetstream_answers: bool = True
    # The declared streams the service declares: those it publishes to, and those it consumes.
    streams: list[str] = field(default_factory=list)
    _identity: PeerClient | None = None

    @classmethod
    async def connect(cls, settings: Settings, schema_sql: str | None = None) -> Infrastructure:
        """Connect to PostgreSQL (creating the service's schema), NATS and Redis."""
        topology = Topology(settings.prefix)
        schema = topology.schema(settings.service)
        pool = await create_pool(settings.database_url, schema, application=settings.service, max_size=20)
        if schema_sql is not None:
            await apply_schema(pool, schema, schema_sql)
        nats_closed = asyncio.Event()

        async def closed() -> None:
            nats_closed.set()

        try:
            nc = await connect_nats(
                settings.nats_url,
                settings.tls,
                settings.nats_credentials,
                name=settings.service,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                closed_cb=closed,
                inbox_prefix=topology.inbox(settings.service),
            )
        except BaseException:
            await pool.close()
            raise
        try:
            check_max_payload(nc.max_payload)
        except RuntimeError:
            await nc.close()
            await pool.close()
            raise
        js = nc.jetstream()
        registry = load_registry()
        # The streams it publishes to; those it consumes are added once its parts are built.
        streams = produced_streams(settings.service, registry)
        await ensure_streams(js, registry, topology, settings.streams, only=streams)
        codec = EventCodec(registry, settings.service, topology)
        # After a few timeouts, commands are refused at once for a while (decision 73).
        redis = GuardedRedis.over(redis_pool(settings.redis_url), redis_breaker())
        outbox = OutboxWriter(codec, schema)
        revocations = RedisRevocations(redis, settings.prefix)
        infra = cls(
            settings, pool, nc, js, redis, registry, topology, codec, outbox, revocations, nats_closed
        )
        infra.streams = streams
        infra.certificates = Certificates(settings.tls, settings.service)
        # A reconnection to NATS makes its handshake with the files as last read (decision 62).
        infra.certificates.follow(lambda renewed: nc.options.update(tls=nats_ssl_context(renewed)))
        if settings.service != "identity" and settings.peers.get("identity"):
            infra._identity = PeerClient.to("identity", settings.peer("identity"), infra.certificates)
            infra.revocation_fallback = ask_identity(infra._identity)
        return infra

    async def use_streams(self, consumed: Iterable[str]) -> None:
        """Declare the streams the service consumes too, before its consumers are made (those it
        publishes to were declared at start)."""
        used = streams_used(self.settings.service, self.registry, consumed)
        added = [name for name in used if name not in self.streams]
        self.streams = used
        if added:
            await ensure_streams(self.js, self.registry, self.topology, self.settings.streams, only=added)

    async def ensure_streams(self) -> None:
        """Declare the streams the service uses (`streams`), as at start (a stream deleted since, or
        lost with the server's state, is created again; the relay and the consumers call this when
        they find none). Only those: its NATS user may touch no other (decision 68)."""
        await ensure_streams(self.js, self.registry, self.topology, self.settings.streams, only=self.streams)

    def checks(self) -> dict[str, Callable[[], Awaitable[bool]]]:
        """Health checks of the three dependencies."""

        async def postgres() -> bool:
            return bool(await self.pool.fetchval("SELECT 1") == 1)

        async def nats_up() -> bool:
            """Connected, and JetStream answers (`jetstream_answers`)."""
            if not self.nc.is_connected:
                return False
            try:
                await self.js.account_info()
            except BaseException:
                self.jetstream_answers = False
                raise
            self.jetstream_answers = True
            return True

        async def redis_up() -> bool:
            return bool(await self.redis.ping())

        return {"postgres": postgres, "nats": nats_up, "redis": redis_up}

    def verifier(self, public_key_pem: str) -> TokenVerifier:
        """A token verifier that sees the revocations recorded in Redis, and asks
        `revocation_fallback` while Redis fails."""
        return TokenVerifier(public_key_pem, self.revocations, fallback=self.revocation_fallback)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Close every connection, each within `timeout_s`: a stop must not hang on a peer."""
        if not await bounded(self.nc.drain(), timeout_s, "NATS drain"):
            await bounded(self.nc.close(), timeout_s, "NATS close")
        await bounded(self.redis.aclose(), timeout_s, "Redis close")
        if self._identity is not None:
            await bounded(self._identity.close(), timeout_s, "identity channel close")
        if not await bounded(self.pool.close(), timeout_s, "database pool close"):
            self.pool.terminate()


async def bounded(step: Awaitable[object], timeout_s: float, what: str) -> bool:
    """Run one shutdown step for at most `timeout_s`; True when it finished without error.

    Unlike `asyncio.wait_for`, this returns on time even when the step swallows its cancellation
    (some client libraries do while closing): the step is cancelled and left behind, logged.
    """
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        task.cancel()
        log.warning("shutdown: %s did not finish within %.0f s; left behind", what, timeout_s)
        return False
    if task.cancelled() or task.exception() is not None:
        log.warning("shutdown: %s failed: %r", what, None if task.cancelled() else task.exception())
        return False
    return True


async def apply_schema(pool: asyncpg.Pool, schema: str, sql: str) -> None:
    """Run a service's schema.sql (idempotent DDL) in its schema, one replica at a time."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"a4co-ddl:{schema}")
        await conn.execute(sql)


@dataclass
class ServiceParts:
    """What a service brings to the runtime."""

    registrations: Sequence[Registration]
    policies: Mapping[str, MethodPolicy]
    subscriptions: Subscriptions = field(default_factory=dict)
    extra_checks: Mapping[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = ()


class ServiceRunner:
    """Starts and stops the moving parts of one service process."""

    def __init__(
        self,
        infra: Infrastructure,
        parts: ServiceParts,
        *,
        verifier: TokenVerifier | None,
        grpc_address: str = "127.0.0.1:0",
    ) -> None:
        self.infra, self.parts = infra, parts
        settings = infra.settings
        interceptor = PlatformInterceptor(
            service=settings.service,
            domain=f"{settings.service}.a4co",
            policies=parts.policies,
            verifier=verifier,
        )
        self.server = GrpcServer(
            parts.registrations,
            interceptor,
            checks={**infra.checks(), **parts.extra_checks},
            # Without NATS the outbox keeps the events, and without Redis its copies are read
            # from PostgreSQL and sessions checked with identity (decisions 33 and 34).
            essential={"postgres", *parts.extra_checks},
            service_label=settings.service,
            address=grpc_address,
            max_concurrent_rpcs=settings.max_concurrent_rpcs,
            max_streams=settings.max_streams,
            acceptors=settings.grpc_acceptors,
            keepalive_s=settings.grpc_keepalive_s,
            max_connection_age_s=settings.grpc_max_connection_age_s,
            credentials=infra.certificates.server_credentials(),
        )
        self.relay = OutboxRelay(
            dsn=settings.database_url,
            schema=infra.topology.schema(settings.service),
            service=settings.service,
            js=infra.js,
            streams=infra.ensure_streams,
        )
        infra.outbox.relay_here(self.relay)
        self.consumers = [
            QueueConsumer(
                service=settings.service,
                stream=stream,
                handlers=handlers,
                js=infra.js,
                pool=infra.pool,
                codec=infra.codec,
                topology=infra.topology,
                outbox=infra.outbox,
                streams=infra.ensure_streams,
            )
            for stream, handlers in parts.subscriptions.items()
        ]
        self._tasks: list[asyncio.Task[None]] = []
        # Set when a task the service cannot work without (the outbox relay, a consumer, a
        # background job) ended with an error: `run_until_signalled` then stops the service, to be
        # started again, instead of serving on without it (its events would wait in the outbox
        # for good, say). `broken_by` says which and why.
        self.broken = asyncio.Event()
        self.broken_by = ""
        self._stopping = False

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(self._on_task_end)
        self._tasks.append(task)

    def _on_task_end(self, task: asyncio.Task[None]) -> None:
        if self._stopping or task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        self.broken_by = f"{task.get_name()} failed ({type(error).__name__}: {error})"
        log.critical("%s; stopping, to be started again", self.broken_by, exc_info=error)
        self.broken.set()

    async def start(self) -> None:
        """Serve, relay and consume."""
        await self.infra.use_streams(self.parts.subscriptions)
        await self.server.start()
        self._spawn(self.relay.run(), "outbox relay")
        self._spawn(
            keep_inbox_pruned(self.infra.pool, self.infra.settings.streams.max_age_s), "inbox pruning"
        )
        self._spawn(self.infra.revocations.memory.follow(), "revocations")
        if self.infra.certificates.watched:
            self._spawn(self.infra.certificates.watch(self.infra.settings.tls_check_s), "TLS files")
        for job in self.parts.background:
            self._spawn(job(), getattr(job, "__name__", "job"))
        for consumer in self.consumers:
            await consumer.start()
            consumer.add_done_callback(self._on_task_end)

    async def stop(self) -> None:
        """Graceful stop: no new calls, in-flight calls and messages finish, then disconnect."""
        self._stopping = True
        await bounded(self.server.stop(), 15, "gRPC server stop")
        for consumer in self.consumers:
            await bounded(consumer.stop(), 15, f"consumer of {consumer.stream} stop")
        await self.relay.stop()
        await asyncio.gather(*(cancel_and_wait(task, 10) for task in self._tasks))


async def run_until_signalled(
    runner: ServiceRunner, *, metrics_port: int | None, on_ready: Callable[[], None]
) -> None:
    """Start `runner`, report readiness, and stop it on SIGTERM or SIGINT; NatsClosedError when the
    NATS client was closed underneath it, after stopping it, so that its supervisor starts it again."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP: look at the TLS files now rather than at the next regular look (decision 59).
    loop.add_signal_handler(signal.SIGHUP, runner.infra.certificates.check)
    if metrics_port is not None:
        address = os.environ.get("A4CO_METRICS_ADDR", "127.0.0.1")
        try:
            serve_metrics(metrics_port, address, runner.infra.certificates)
        except OSError as exc:  # taken since it was chosen, or not this host's: exit to be moved
            raise ListenError(f"cannot serve metrics on {address}:{metrics_port}: {exc}") from exc
    await runner.start()
    on_ready()
    closed = runner.infra.nats_closed
    waiting = [asyncio.create_task(event.wait()) for event in (stop, closed, runner.broken)]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    for wait in waiting:
        wait.cancel()
    lost = closed.is_set() and not stop.is_set()
    broken = runner.broken.is_set() and not stop.is_set()
    if lost:
        log.error(
            "the NATS connection was closed (%s); stopping, to be started again", runner.infra.nc.last_error
        )
    elif not broken:
        log.info("stopping")
    await runner.stop()
    await runner.infra.close()
    if lost:
        raise NatsClosedError(f"the NATS connection was closed: {runner.infra.nc.last_error}")
    if broken:
        raise BrokenError(runner.broken_by)


class BrokenError(RuntimeError):
    """A task the service cannot work without ended with an error (`ServiceRunner.broken_by`):
    the service stopped, for its supervisor to start it again."""


class NatsClosedError(RuntimeError):
    """The NATS client was closed under a running service; nats-py does not reconnect after a
    protocol error from the server (a message over its `max_payload`, say)."""
