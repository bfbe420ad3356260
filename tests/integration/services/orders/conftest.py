"""The shop of the saga's tests, with timeouts short enough to be waited for."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from services.platform.local_servers import ServerUrls
from tests.integration.services.harness import Keys
from tests.integration.services.orders.shop import Actors, shop


@pytest_asyncio.fixture
async def actors(
    urls: ServerUrls, prefix: str, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Actors]:
    """The shop with an artisan's workshop open; a saga step times out after 3 s."""
    monkeypatch.setenv("A4CO_SAGA_PAYMENT_TIMEOUT_S", "3")
    monkeypatch.setenv("A4CO_SAGA_RESERVATION_TIMEOUT_S", "3")
    async with shop(urls, prefix, keys) as svc:
        people = Actors(svc, keys)
        await people.open_workshop()
        yield people
