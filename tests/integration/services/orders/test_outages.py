"""The saga through an outage of NATS: a step that cannot be asked nor answered while orders is cut
off from NATS is not timed out for it (docs/saga.md, "Timeouts")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from a4co.orders.v1 import orders_service_pb2 as pb
from services.platform.local_servers import LocalServers, ServerUrls
from tests.integration.services.harness import Keys
from tests.integration.services.orders.shop import Actors, shop
from tests.support.servers import stoppable, stopped
from tests.support.waiting import eventually

PAYMENT_TIMEOUT_S = 3  # the step that falls due during the outage
GRACE_S = 15  # the longest step timeout: the grace after it, time for NATS's clients to reconnect


@pytest_asyncio.fixture
async def actors(
    urls: ServerUrls, prefix: str, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Actors]:
    monkeypatch.setenv("A4CO_SAGA_PAYMENT_TIMEOUT_S", str(PAYMENT_TIMEOUT_S))
    monkeypatch.setenv("A4CO_SAGA_RESERVATION_TIMEOUT_S", str(GRACE_S))
    async with shop(urls, prefix, keys) as svc:
        people = Actors(svc, keys)
        await people.open_workshop()
        yield people


async def test_a_payment_step_due_while_nats_is_down_is_answered_after_it(
    actors: Actors, local_servers: LocalServers
) -> None:
    nats = stoppable(local_servers, "nats")
    product = await actors.product(stock=4)
    card = await actors.card()
    with stopped(nats):
        placed = await actors.place(product, 1, card)  # checked and stored; its event waits
        due: datetime = await actors.svc["orders"].infra.pool.fetchval(
            "SELECT step_deadline FROM orders WHERE order_id = $1", placed.order_id
        )
        await eventually(
            lambda: datetime.now(UTC) > due + timedelta(seconds=1),
            timeout=PAYMENT_TIMEOUT_S + 10,
            what="the payment step overdue, NATS still down",
        )
        assert (await actors.status_of(placed.order_id)).status == pb.ORDER_STATUS_PENDING
    confirmed = await actors.settles(placed.order_id, pb.ORDER_STATUS_CONFIRMED, timeout=GRACE_S)
    assert confirmed.cancel_reason == ""
