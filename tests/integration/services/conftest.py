"""Fixtures shared by the tests of the synchronous services."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest_asyncio

from services.catalog.__main__ import build as build_catalog
from services.geo.__main__ import build as build_geo
from services.identity.__main__ import build as build_identity
from services.inventory.__main__ import build as build_inventory
from services.payments.__main__ import build as build_payments
from services.platform.local_servers import ServerUrls
from tests.integration.services.harness import (
    Keys,
    RunningService,
    running_services,
)

BUILDS = {
    "identity": build_identity,
    "inventory": build_inventory,
    "payments": build_payments,
    "catalog": build_catalog,
    "geo": build_geo,
}


@contextlib.asynccontextmanager
async def five_services(
    urls: ServerUrls, prefix: str, keys: Keys
) -> AsyncIterator[dict[str, RunningService]]:
    """The five synchronous services, in-process, under one prefix."""
    async with running_services(BUILDS, urls, prefix, keys) as running:
        yield running


@pytest_asyncio.fixture
async def five(urls: ServerUrls, prefix: str, keys: Keys) -> AsyncIterator[dict[str, RunningService]]:
    """The five synchronous services under the test's own prefix."""
    async with five_services(urls, prefix, keys) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def five_shared(urls: ServerUrls, keys: Keys) -> AsyncIterator[dict[str, RunningService]]:
    """The five services shared by one module's tests, for tests that change nothing they read."""
    async with five_services(urls, "t" + uuid.uuid4().hex[:12], keys) as running:
        yield running
