"""Run services in the test process, each with its own prefix, on the session's real servers."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import nats.js.errors
from google.protobuf.message import Message

from services.platform.auth import Role, TokenIssuer, generate_keypair
from services.platform.db import create_pool
from services.platform.events.codec import EventCodec, IncomingEvent
from services.platform.events.consumer import QueueConsumer
from services.platform.events.topology import Topology
from services.platform.local_servers import ServerUrls
from services.platform.runtime import Infrastructure, ServiceParts, ServiceRunner, apply_schema
from services.platform.settings import Settings

Build = Callable[[Infrastructure], Awaitable[ServiceParts]]


@dataclass(frozen=True)
class Keys:
    """The token key pair of a test session, as files like a deployment has them."""

    private_file: Path
    public_file: Path

    @classmethod
    def create(cls, directory: Path) -> Keys:
        private, public = generate_keypair()
        (directory / "jwt.key").write_text(private)
        (directory / "jwt.pub").write_text(public)
        return cls(directory / "jwt.key", directory / "jwt.pub")

    def issuer(self, ttl_s: int = 900) -> TokenIssuer:
        return TokenIssuer(self.private_file.read_text(), ttl_s=ttl_s)


def settings_for(
    service: str, urls: ServerUrls, prefix: str, keys: Keys, peers: Mapping[str, str] | None = None
) -> Settings:
    return Settings(
        service=service,
        nats_url=urls.nats_url,
        database_url=urls.database_url,
        redis_url=urls.redis_url,
        prefix=prefix,
        jwt_public_key_file=str(keys.public_file),
        jwt_private_key_file=str(keys.private_file),
        peers=dict(peers or {}),
    )


@dataclass
class RunningService:
    """A service started in-process, and a channel to it."""

    runner: ServiceRunner
    channel: grpc.aio.Channel

    @property
    def infra(self) -> Infrastructure:
        return self.runner.infra

    @property
    def address(self) -> str:
        return self.runner.server.address

    def consumer(self, stream: str) -> QueueConsumer:
        """The service's queue consumer of one stream."""
        (found,) = [c for c in self.runner.consumers if c.stream == stream]
        return found


@contextlib.asynccontextmanager
async def running_service(
    service: str, build: Build, schema_file: Path | None, settings: Settings
) -> AsyncIterator[RunningService]:
    schema_sql = schema_file.read_text() if schema_file else None
    infra = await Infrastructure.connect(settings, schema_sql)
    runner = ServiceRunner(infra, await build(infra), verifier=infra.verifier(settings.public_key()))
    await runner.start()
    channel = grpc.aio.insecure_channel(runner.server.address)
    try:
        yield RunningService(runner, channel)
    finally:
        await channel.close()
        await runner.stop()
        await infra.close()


@contextlib.asynccontextmanager
async def running_services(
    builds: Mapping[str, Build], urls: ServerUrls, prefix: str, keys: Keys
) -> AsyncIterator[dict[str, RunningService]]:
    """Several services in-process under one prefix, each with its `schema.sql`, started in the
    order given and stopped in the reverse."""
    async with contextlib.AsyncExitStack() as stack:
        running = {}
        for name, build in builds.items():
            settings = settings_for(name, urls, prefix, keys)
            schema = Path(f"services/{name}/schema.sql")
            running[name] = await stack.enter_async_context(running_service(name, build, schema, settings))
        yield running


@contextlib.asynccontextmanager
async def service_tables(urls: ServerUrls, topology: Topology, service: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a service's schema with its `schema.sql` applied, the service itself not running:
    for tests of its repositories."""
    schema = topology.schema(service)
    pool = await create_pool(urls.database_url, schema)
    try:
        await apply_schema(pool, schema, Path(f"services/{service}/schema.sql").read_text())
        yield pool
    finally:
        await pool.close()


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def publish_event(
    service: RunningService,
    event: Message,
    aggregate_id: str,
    source: str = "test",
    ttl_s: float | None = None,
) -> str:
    """Publish an event straight onto its stream, as its producer's relay would (`ttl_s` for an
    event declared `expires`); returns its id."""
    codec = EventCodec(service.infra.registry, source, service.infra.topology)
    out = codec.encode(event, aggregate_id=aggregate_id, ttl_s=ttl_s)
    await service.infra.js.publish(out.subject, out.body, headers=out.headers)
    return out.event_id


async def stream_events(service: RunningService, stream: str) -> list[IncomingEvent]:
    """Every event in one of the deployment's streams, decoded, oldest first."""
    js, name = service.infra.js, service.infra.topology.stream(stream)
    last = (await js.stream_info(name)).state.last_seq
    found = []
    for seq in range(1, last + 1):
        with contextlib.suppress(nats.js.errors.NotFoundError):
            found.append(service.infra.codec.decode((await js.get_msg(name, seq=seq)).data or b""))
    return found


def token(keys: Keys, user_id: str, role: Role) -> tuple[tuple[str, str]]:
    """Call metadata with a valid access token for `user_id` in `role`."""
    access, _ = keys.issuer().issue(user_id, role, str(uuid.uuid4()))
    return bearer(access)
