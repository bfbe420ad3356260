"""`a4co trace` against real streams, run as an operator runs it."""

from __future__ import annotations

from services.platform.local_servers import ServerUrls
from tests.integration.events.rig import Rig, orders_created
from tests.support.cli import run_a4co_on as a4co


async def test_an_order_s_events_are_drawn_as_a_tree(rig: Rig, urls: ServerUrls, prefix: str) -> None:
    await orders_created(rig, "o-1", "o-2")
    code, out = await a4co(urls, prefix, "trace", "o-2")
    assert code == 0, out
    assert out.startswith("order o-2\n"), out
    assert "OrderCreated from orders" in out
    assert out.count("OrderCreated") == 1, "o-1's event is not o-2's"


async def test_an_order_no_event_mentions_is_said(rig: Rig, urls: ServerUrls, prefix: str) -> None:
    await orders_created(rig, "o-1")
    code, out = await a4co(urls, prefix, "trace", "o-9")
    assert (code, out.strip()) == (1, "no event mentions order o-9")


async def test_a_deployment_without_its_streams_is_said(urls: ServerUrls, prefix: str) -> None:
    code, out = await a4co(urls, prefix, "trace", "o-1")
    assert code == 2, out
    assert f"has no stream {prefix}_" in out, out
    assert "Traceback" not in out
