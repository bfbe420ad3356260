"""`a4co status` reads what each service's metrics say is down."""

from __future__ import annotations

import socket
import time

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from services.cli.status import certificate_expiry, days_left, dependencies_down, scrape_metrics
from services.platform.grpc.server import DEPENDENCY_UP
from services.platform.grpc.tls import CERTIFICATE_EXPIRY


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
