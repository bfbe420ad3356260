"""`a4co check` over the saga's databases: on a live system only the orders that have settled are
checked, so one in flight is not reported, and one out of step for longer is."""

from __future__ import annotations

import json
import os
import uuid

import asyncpg

from a4co.orders.v1 import orders_service_pb2 as pb
from services.cli.check import violations
from services.platform.events.topology import Topology
from services.platform.local_servers import ServerUrls
from tests.integration.services.orders.shop import Actors
from tests.support.cli import run_a4co
from tests.support.waiting import eventually


async def a4co_check(urls: ServerUrls, prefix: str, *args: str) -> tuple[int, str]:
    env = dict(os.environ, A4CO_DATABASE_URL=urls.database_url, A4CO_PREFIX=prefix)
    return await run_a4co("check", *args, env=env)


async def test_an_order_out_of_step_is_reported_once_it_has_settled(
    actors: Actors, urls: ServerUrls, prefix: str
) -> None:
    product, card = await actors.product(stock=5), await actors.card()
    placed = await actors.place(product, 1, card)
    confirmed = await actors.settles(placed.order_id, pb.ORDER_STATUS_CONFIRMED)
    topology = Topology(prefix)

    async def quiet() -> bool:
        return await violations(urls.database_url, topology) == []

    await eventually(quiet, timeout=20, what="the invariants after a confirmed order")

    # The order put back to PAID, as if its reservation had never been answered and no timeout had
    # cancelled it: charged, holding stock, and waiting for a step.
    orders = f'"{topology.schema("orders")}".orders'
    conn = await asyncpg.connect(urls.database_url)
    try:

        async def set_order(status: str, changed: str) -> None:
            await conn.execute(
                f"UPDATE {orders} SET status = $2, updated_at = {changed} WHERE order_id = $1",
                uuid.UUID(placed.order_id),
                status,
            )

        await set_order("PAID", "now()")
        expected = [
            f"charges - refunds = {confirmed.total.amount_cents} but confirmed totals = 0",
            f"order {placed.order_id} is PAID but still holds stock",
            f"order {placed.order_id} is stuck in PAID",
        ]
        assert await violations(urls.database_url, topology) == expected
        assert await violations(urls.database_url, topology, settled_for_s=60) == [], (
            "in flight, not checked yet"
        )
        code, out = await a4co_check(urls, prefix)
        assert (code, out.strip()) == (0, "every invariant holds over 0 orders unchanged for 60 s"), out

        await set_order("PAID", "now() - interval '2 minutes'")
        assert await violations(urls.database_url, topology, settled_for_s=60) == expected
        code, out = await a4co_check(urls, prefix)
        assert code == 1, out
        assert [line.removeprefix("✗ ") for line in out.splitlines()] == [
            *expected,
            "3 violations over 1 order unchanged for 60 s",
        ]
        code, out = await a4co_check(urls, prefix, "--json")
        assert code == 1, out
        assert json.loads(out) == {"violations": expected, "orders_checked": 1, "settled_for_s": 60.0}

        await set_order("CONFIRMED", "now() - interval '2 minutes'")
        code, out = await a4co_check(urls, prefix, "--settled-for", "30")
        assert (code, out.strip()) == (0, "every invariant holds over 1 order unchanged for 30 s"), out
    finally:
        await conn.close()
