"""`a4co status` reads what each service's metrics say is down."""

from __future__ import annotations

import socket
import time

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from services.cli.status import (
    Status,
    certificate_expiry,
    circuits_not_closed,
    days_left,
    dependencies_down,
    nats_reconnections,
    nats_refusals,
    report,
    scrape_metrics,
)
from services.platform.events.connection import DENIALS, RECONNECTIONS
from services.platform.grpc.server import DEPENDENCY_UP
from services.platform.grpc.tls import CERTIFICATE_EXPIRY
from services.platform.resilience import BREAKER_STATE


def test_the_dependencies_a_service_serves_on_without_are_read_from_its_metrics() -> None:
    registry = CollectorRegistry()
    # The services' gauge, in a registry of the test's own.
    up = Gauge(DEPENDENCY_UP._name, "up", ["service", "dependency"], registry=registry)
    up.labels("inventory", "postgres").set(1)
    up.labels("inventory", "nats").set(0)
    up.labels("inventory", "redis").set(0)
    assert dependencies_down(generate_latest(registry).decode()) == ["nats", "redis"]
    up.labels("inventory", "redis").set(1)
    up.labels("inventory", "nats").set(1)
    assert dependencies_down(generate_latest(registry).decode()) == []


async def test_metrics_that_do_not_answer_say_nothing_is_known_not_that_nothing_is_down() -> None:
    with socket.socket() as closed:  # a port bound and never listened on: refused
        closed.bind(("127.0.0.1", 0))
        assert await scrape_metrics(closed.getsockname()[1], None) is None


def test_the_certificate_a_service_serves_is_read_from_its_metrics_and_shown_in_days() -> None:
    registry = CollectorRegistry()
    expiry = Gauge(CERTIFICATE_EXPIRY._name, "expiry", ["service"], registry=registry)
    assert certificate_expiry(generate_latest(registry).decode()) is None, "plaintext: none"
    in_30_days = time.time() + 30 * 86_400 + 60
    expiry.labels("catalog").set(in_30_days)
    assert certificate_expiry(generate_latest(registry).decode()) == in_30_days
    assert days_left(in_30_days) == "expires in 30 d"
    assert days_left(time.time() + 3 * 86_400 + 60) == "[red]expires in 3 d[/red]"
    assert days_left(time.time() - 2 * 86_400 - 60) == "[red]expired 2 d ago[/red]"
    assert days_left(None) == "—"


def test_the_reconnections_to_nats_are_read_from_a_services_metrics_and_shown_once_there_are_some(
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = CollectorRegistry()
    counted = Counter(RECONNECTIONS._name, "reconnections", ["service"], registry=registry)
    counted.labels("orders")
    assert nats_reconnections(generate_latest(registry).decode()) == 0
    counted.labels("orders").inc(3)
    assert nats_reconnections(generate_latest(registry).decode()) == 3

    calm = Status(services={"orders": "SERVING"}, nats_reconnections={"orders": 0})
    report(calm, as_json=False)
    assert "NATS reconnections" not in capsys.readouterr().out
    moved = Status(services={"orders": "SERVING"}, nats_reconnections={"orders": 3})
    report(moved, as_json=False)
    shown = capsys.readouterr().out
    assert "NATS reconnections" in shown
    [row] = [line for line in shown.splitlines() if "orders" in line]
    assert row.split("│")[5].strip() == "3", row


def test_what_nats_refused_each_service_is_read_from_its_metrics_and_shown_once_there_is_some(
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = CollectorRegistry()
    refused = Counter(DENIALS._name, "refusals", ["service"], registry=registry)
    refused.labels("payments")
    assert nats_refusals(generate_latest(registry).decode()) == 0
    refused.labels("payments").inc(2)
    assert nats_refusals(generate_latest(registry).decode()) == 2

    report(Status(services={"payments": "SERVING"}, nats_refusals={"payments": 0}), as_json=False)
    assert "NATS refusals" not in capsys.readouterr().out
    both = Status(
        services={"payments": "SERVING", "orders": "SERVING"}, nats_refusals={"payments": 2, "orders": 0}
    )
    report(both, as_json=False)
    shown = capsys.readouterr().out
    assert "NATS refusals" in shown
    rows = {
        line.split("│")[1].strip(): line.split("│")[5].strip()
        for line in shown.splitlines()
        if "SERVING" in line
    }
    assert rows == {"payments": "2", "orders": "0"}, shown


def test_the_circuits_a_service_holds_open_are_read_from_its_metrics_and_shown_while_there_are_some(
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = CollectorRegistry()
    state = Gauge(BREAKER_STATE._name, "state", ["peer"], registry=registry)
    state.labels("inventory").set(0)
    assert circuits_not_closed(generate_latest(registry).decode()) == {}
    state.labels("inventory").set(2)
    state.labels("payments").set(1)
    state.labels("geo").set(0)
    opened = circuits_not_closed(generate_latest(registry).decode())
    assert opened == {"inventory": "open", "payments": "half-open"}

    report(Status(services={"orders": "SERVING"}), as_json=False)
    assert "circuits" not in capsys.readouterr().out
    report(
        Status(services={"orders": "SERVING", "cms": "SERVING"}, circuits={"orders": opened}), as_json=False
    )
    shown = capsys.readouterr().out
    assert "circuits" in shown
    cells = [line.split("│")[5].strip() for line in shown.splitlines() if line.count("│") > 5]
    # orders' cell (over two lines at 80 columns), then cms's
    assert " ".join(cells) == "inventory open, payments half-open —", cells
