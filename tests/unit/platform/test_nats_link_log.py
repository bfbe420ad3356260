"""What a service says of its connection to NATS (LinkLog): once when it is lost or NATS does not
answer, again every REPEAT_S while that lasts, once when it is back; each reconnection counted."""

from __future__ import annotations

import logging
import ssl

import pytest
from nats.errors import Error, StaleConnectionError, UnexpectedEOF
from nats.js.errors import APIError
from prometheus_client import REGISTRY

from services.platform.events.connection import REPEAT_S, LinkLog, unreachable
from tests.support.clock import Clock
from tests.support.logs import said as logged

URL = "nats://n1:4222,nats://n2:4222"
REFUSED = ConnectionRefusedError(111, "Connect call failed ('10.0.0.1', 4222)")


def said(caplog: pytest.LogCaptureFixture, at_least: int = logging.INFO) -> list[tuple[int, str]]:
    """What LinkLog logged at `at_least` or above."""
    return logged(caplog, "services.platform.events.connection", at_least)


def reconnections(service: str) -> float:
    return REGISTRY.get_sample_value("a4co_nats_reconnections_total", {"service": service}) or 0.0


@pytest.fixture(autouse=True)
def _everything_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="services.platform.events.connection")


def test_a_connection_that_breaks_is_said_lost_once_and_back_once_with_how_long(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    link = LinkLog(URL, "link-test-lost", clock)
    link.connected("nats://n1:4222", again=False)
    assert said(caplog) == []  # connecting at the first attempt is nothing to say

    link.failed(UnexpectedEOF())
    link.lost()  # nats-py's disconnected callback, after the error
    for _ in range(5):
        clock.now += 0.5
        link.failed(REFUSED)
    clock.now += 0.5
    link.connected("nats://n2:4222", again=True)

    assert said(caplog) == [
        (
            logging.WARNING,
            "lost the connection to NATS at nats://n1:4222 (nats: unexpected EOF);"
            " connecting again until it answers",
        ),
        (logging.INFO, "reconnected to NATS at nats://n2:4222 after 3.0 s away (5 attempts failed)"),
    ]
    assert len(said(caplog, logging.DEBUG)) - len(said(caplog)) == 5  # each refused attempt
    assert reconnections("link-test-lost") == 1


def test_a_connection_lost_without_an_error_is_said_lost(caplog: pytest.LogCaptureFixture) -> None:
    """A stale connection reaches only the disconnected callback."""
    clock = Clock()
    link = LinkLog(URL, "link-test-stale", clock)
    link.connected("nats://n1:4222", again=False)
    link.lost()
    clock.now += 1.25
    link.connected("nats://n1:4222", again=True)
    assert said(caplog) == [
        (logging.WARNING, "lost the connection to NATS at nats://n1:4222; connecting again until it answers"),
        (logging.INFO, "reconnected to NATS at nats://n1:4222 after 1.2 s away (0 attempts failed)"),
    ]


def test_nats_away_for_long_is_said_again_every_repeat_s(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    link = LinkLog(URL, "link-test-long", clock)
    link.failed(REFUSED)  # at start: NATS does not answer yet
    attempts = 1
    while clock.now < 1000.0 + 2 * REPEAT_S + 1:
        clock.now += 0.5
        link.failed(REFUSED)
        attempts += 1
    link.connected("nats://n1:4222", again=False)

    assert said(caplog) == [
        (logging.WARNING, f"NATS at {URL} does not answer ({REFUSED}); trying again until it does"),
        (logging.WARNING, f"NATS still away after {REPEAT_S:.0f} s (60 attempts), the last: {REFUSED}"),
        (logging.WARNING, f"NATS still away after {2 * REPEAT_S:.0f} s (120 attempts), the last: {REFUSED}"),
        (logging.INFO, f"connected to NATS at nats://n1:4222 after 61.0 s away ({attempts} attempts failed)"),
    ]
    assert reconnections("link-test-long") == 0  # the first connection is not a reconnection


def test_a_failed_tls_handshake_is_an_error(caplog: pytest.LogCaptureFixture) -> None:
    link = LinkLog(URL, "link-test-tls", Clock())
    link.connected("tls://n1:4222", again=False)
    link.failed(ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca"))
    assert [level for level, _ in said(caplog)] == [logging.ERROR]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (REFUSED, True),
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (TimeoutError(), True),
        (UnexpectedEOF(), True),
        (StaleConnectionError(), True),
        (ssl.SSLError(1, "handshake"), True),
        (APIError(code=503, description="no responders"), False),
        (ValueError("a bug"), False),
    ],
)
def test_what_says_nats_is_away(error: Exception, expected: bool) -> None:
    assert unreachable(error) is expected


def test_credentials_refused_on_a_reconnection_are_said_at_once_at_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The connection broke (a server reloaded), then NATS refuses it back: said when it first
    shows, not 30 s later; the refusals after it only at DEBUG."""
    clock = Clock()
    link = LinkLog(URL, "link-test-refused", clock)
    link.connected("nats://n1:4222", again=False)
    link.failed(UnexpectedEOF())
    refusal = Error("nats: 'Authorization Violation'")
    for _ in range(3):
        clock.now += 0.5
        link.failed(refusal)
    assert said(caplog) == [
        (
            logging.WARNING,
            "lost the connection to NATS at nats://n1:4222 (nats: unexpected EOF);"
            " connecting again until it answers",
        ),
        (
            logging.ERROR,
            f"NATS at {URL} refuses this connection (nats: 'Authorization Violation'); trying again until it"
            " accepts it",
        ),
    ]
    assert len(said(caplog, logging.DEBUG)) - len(said(caplog)) == 2


def test_a_reconnection_closed_before_it_is_said_names_the_server_last_connected_to(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """nats-py calls back on a reconnection after a round trip; a connection closed in between has
    no server any more (None): the one last connected to is said, or the URL if there was none."""
    clock = Clock()
    link = LinkLog(URL, "link-test-closed", clock)
    link.connected("nats://n1:4222", again=False)
    link.lost()
    clock.now += 0.5
    link.connected(None, again=True)
    unknown = LinkLog(URL, "link-test-closed-first", clock)
    unknown.failed(REFUSED)
    unknown.connected(None, again=False)
    assert [text for level, text in said(caplog) if level == logging.INFO] == [
        "reconnected to NATS at nats://n1:4222 after 0.5 s away (0 attempts failed)",
        f"connected to NATS at {URL} after 0.0 s away (1 attempts failed)",
    ]
