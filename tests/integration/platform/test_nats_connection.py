"""A service's connection to a real nats-server that goes away and comes back, or answers only
after the service started: said once when lost, once when back, with how long, each reconnection
counted; not an ERROR with a traceback at every attempt, twice a second, as nats-py says it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from services.platform.events import connection
from services.platform.events.connection import connect
from services.platform.grpc.tls import PLAINTEXT
from services.platform.local_servers import NatsServer
from tests.support.stalling_proxy import StallingProxy
from tests.support.waiting import eventually

LOGGER = "services.platform.events.connection"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of the test's own, to stop and start again on the same port."""
    server = NatsServer(tmp_path / "nats" / "data", durable=False)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _everything_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)


def said(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """What the connection said at INFO or above."""
    return [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.name == LOGGER and r.levelno >= logging.INFO
    ]


def attempts(caplog: pytest.LogCaptureFixture) -> int:
    """The failed attempts to reach NATS, each said at DEBUG."""
    return sum(1 for r in caplog.records if r.name == LOGGER and r.levelno == logging.DEBUG)


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Anything at ERROR, or logged with a traceback."""
    return [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_nats_away_and_back_is_said_once_each_and_counted(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The server stops while a service is connected; the service tries again (three failed
    attempts at least) until the server is back on its port, then serves requests as before."""
    nats_server.start()
    counted = {"service": "link-away"}
    before = REGISTRY.get_sample_value("a4co_nats_reconnections_total", counted) or 0.0
    nc = await connect(
        nats_server.url, PLAINTEXT, name="link-away", max_reconnect_attempts=-1, reconnect_time_wait=0.1
    )
    try:

        async def echo(msg: Msg) -> None:
            await msg.respond(msg.data)

        await nc.subscribe("link.echo", cb=echo)
        assert (await nc.request("link.echo", b"before", timeout=5)).data == b"before"
        assert said(caplog) == []

        await asyncio.to_thread(nats_server.stop)
        await eventually(lambda: attempts(caplog) >= 3, what="three attempts failed")
        await asyncio.to_thread(nats_server.start)
        await eventually(lambda: len(said(caplog)) == 2, what="the reconnection said")

        assert (await nc.request("link.echo", b"after", timeout=5)).data == b"after"
        url = nats_server.url
        assert [level for level, _ in said(caplog)] == ["WARNING", "INFO"], said(caplog)
        lost, back = (text for _, text in said(caplog))
        assert lost.startswith(f"lost the connection to NATS at {url} ("), lost
        assert lost.endswith("; connecting again until it answers"), lost
        assert back.startswith(f"reconnected to NATS at {url} after "), back
        assert errors(caplog) == []
        after = REGISTRY.get_sample_value("a4co_nats_reconnections_total", counted)
        assert after == before + 1
    finally:
        await nc.close()
    assert len(said(caplog)) == 2  # a close is not a loss


async def test_nats_that_answers_late_is_waited_for_and_said_once(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A service started before its NATS says once that NATS does not answer, waits, and says when
    it connected; the first connection is not counted as a reconnection."""
    counted = {"service": "link-late"}
    connecting = asyncio.create_task(
        connect(
            nats_server.url, PLAINTEXT, name="link-late", max_reconnect_attempts=-1, reconnect_time_wait=0.1
        )
    )
    try:
        await eventually(lambda: attempts(caplog) >= 2, what="two attempts failed after the first")
        assert not connecting.done()
        await asyncio.to_thread(nats_server.start)
        nc = await asyncio.wait_for(connecting, 30)
    finally:
        if not connecting.done():
            connecting.cancel()
    try:
        assert nc.is_connected
        [(level, waiting), (level_after, connected)] = said(caplog)
        assert (level, level_after) == ("WARNING", "INFO")
        assert waiting.startswith(f"NATS at {nats_server.url} does not answer ("), waiting
        assert connected.startswith(f"connected to NATS at {nats_server.url} after "), connected
        assert errors(caplog) == []
        assert not REGISTRY.get_sample_value("a4co_nats_reconnections_total", counted)
    finally:
        await nc.close()


async def test_a_nats_that_stops_answering_is_found_stale_and_reached_again(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A server gone without a word (no FIN, no RST: a proxy that holds every byte here) is found
    out by the connection's PINGs going unanswered, not after nats-py's 4 to 6 minutes; the
    connection is then made again once the server answers. The interval is shortened for the test;
    the services' own is checked beside it."""
    nats_server.start()
    port = int(nats_server.url.rsplit(":", 1)[1])
    async with StallingProxy(port).running() as proxy:
        nc = await connect(f"nats://127.0.0.1:{proxy.port}", PLAINTEXT, name="orders", connect_timeout=1)
        try:
            assert (nc.options["ping_interval"], nc.options["max_outstanding_pings"]) == (10, 2)
        finally:
            await nc.close()

        monkeypatch.setattr(connection, "PING_INTERVAL_S", 0.2)
        nc = await connect(f"nats://127.0.0.1:{proxy.port}", PLAINTEXT, name="orders", connect_timeout=1)
        try:
            proxy.flowing.clear()
            await eventually(lambda: not nc.is_connected, what="the stalled connection given up")
            lost = f"lost the connection to NATS at nats://127.0.0.1:{proxy.port}"
            lost += "; connecting again until it answers"
            assert said(caplog) == [("WARNING", lost)]
            proxy.flowing.set()
            await eventually(lambda: nc.is_connected, what="connected again")
            await nc.flush(timeout=5)
        finally:
            await nc.close()
