"""`a4co status` reads what each service's metrics say is down."""

from __future__ import annotations

import socket

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from services.cli.status import dependencies_down, service_dependencies_down
from services.platform.grpc.server import DEPENDENCY_UP
from services.platform.grpc.tls import PLAINTEXT


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
        assert await service_dependencies_down(closed.getsockname()[1], PLAINTEXT) is None
