"""Where the command line finds the servers: flags, then the environment, then the defaults."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import nats
from nats.js import JetStreamContext

from services.platform.events.topology import Topology

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


@dataclass(frozen=True, slots=True)
class Target:
    """The deployment a command acts on."""

    nats_url: str
    prefix: str

    @classmethod
    def resolve(cls, nats_url: str | None, prefix: str | None) -> Target:
        """Flags win over `A4CO_NATS_URL` / `A4CO_PREFIX`, which win over the defaults."""
        return cls(
            nats_url=nats_url or os.environ.get("A4CO_NATS_URL") or DEFAULT_NATS_URL,
            prefix=prefix if prefix is not None else os.environ.get("A4CO_PREFIX", ""),
        )

    @property
    def topology(self) -> Topology:
        """Names on the servers for this deployment."""
        return Topology(self.prefix)


@asynccontextmanager
async def jetstream(target: Target) -> AsyncIterator[JetStreamContext]:
    """A JetStream context on the target's NATS server, closed on exit."""
    nc = await nats.connect(target.nats_url, connect_timeout=3, max_reconnect_attempts=1)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()
