from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from nats.aio.client import Client as NATS

from services.platform.events.registry import EventRegistry
from services.platform.events.topology import Topology
from services.platform.local_servers import ServerUrls
from tests.integration.events.rig import Rig, make_rig


@pytest_asyncio.fixture
async def rig(urls: ServerUrls, nc: NATS, registry: EventRegistry, topology: Topology) -> AsyncIterator[Rig]:
    r = await make_rig(urls.database_url, nc, registry, topology)
    yield r
    await r.close()
