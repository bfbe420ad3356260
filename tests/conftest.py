"""Test session: real NATS JetStream, PostgreSQL and Redis, started once; isolation per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.asyncio import Redis

from services.platform.events.registry import EventRegistry, load_registry
from services.platform.events.topology import Topology
from services.platform.local_servers import LocalServers, ServerUrls
from tests.integration.services.harness import Keys

SPANS = InMemorySpanExporter()


def pytest_configure(config: pytest.Config) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(SPANS))
    trace.set_tracer_provider(provider)


@pytest.fixture(scope="session")
def local_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServers]:
    """The session's servers, started from the PyPI wheels unless A4CO_*_URL names them."""
    servers = LocalServers(Path(tmp_path_factory.mktemp("servers")), durable=False)
    servers.start()
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def urls(local_servers: LocalServers) -> ServerUrls:
    return local_servers.urls


@pytest.fixture(scope="session")
def registry() -> EventRegistry:
    return load_registry()


@pytest.fixture
def prefix() -> str:
    """A prefix unique to the test: its streams, subjects, consumers and schemas."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def topology(prefix: str) -> Topology:
    return Topology(prefix)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    SPANS.clear()
    yield SPANS
    SPANS.clear()


@pytest_asyncio.fixture
async def nc(urls: ServerUrls) -> AsyncIterator[NATS]:
    client = await nats.connect(
        urls.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2
    )
    yield client
    await client.close()


@pytest_asyncio.fixture
async def redis(urls: ServerUrls) -> AsyncIterator[Redis]:
    client = Redis.from_url(urls.redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def admin_db(urls: ServerUrls) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(urls.database_url)
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """The session's token keys, as files."""

    return Keys.create(tmp_path_factory.mktemp("keys"))
