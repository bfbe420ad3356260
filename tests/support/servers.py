"""Stopping one of the test session's servers for a while (an outage), where the session manages it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from services.platform.local_servers import LocalServers, ManagedServer

URL_OF = {"nats": "A4CO_NATS_URL", "postgres": "A4CO_DATABASE_URL", "redis": "A4CO_REDIS_URL"}


def stoppable(local_servers: LocalServers, name: str) -> ManagedServer:
    """The session's `name` server; the test is skipped when it is external (its URL set), which
    a test cannot stop."""
    if not local_servers.is_managed(name):
        pytest.skip(f"{name} is external ({URL_OF[name]}): the test cannot stop it")
    server: ManagedServer = getattr(local_servers, name)
    return server


@contextlib.contextmanager
def stopped(server: ManagedServer) -> Iterator[None]:
    """`server` down for the block, started again after it however the block ends."""
    server.stop()
    try:
        yield
    finally:
        server.start()
