"""Stopping one of the test session's servers for a while (an outage), or making Redis refuse writes,
where the session manages it."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from services.platform.local_servers import LocalServers, ManagedServer

URL_OF = {"nats": "A4CO_NATS_URL", "postgres": "A4CO_DATABASE_URL", "redis": "A4CO_REDIS_URL"}


def stoppable(local_servers: LocalServers, name: str) -> ManagedServer:
    """The session's `name` server; the test is skipped when it is external (its URL set), which
    a test cannot stop."""
    if not local_servers.is_managed(name):
        pytest.skip(f"{name} is external ({URL_OF[name]}): the test cannot stop it")
    if name == "nats" and local_servers.nats_cluster is not None:
        pytest.skip("NATS is a cluster (A4CO_NATS_CLUSTER): the test stops a single server")
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


# How Redis fails writes: stopped, then started again with the data it had when stopped (the
# snapshot taken before), as a server restarted with its persistence comes back;
# full (`maxmemory` reached without eviction: writes refused with OOM); or turned into a replica,
# as a primary demoted by a failover is (writes refused with READONLY). Full or a replica, it
# answers reads meanwhile, with the copies as they were.
REDIS_FAILURES = ["stopped", "full", "replica"]


@contextlib.asynccontextmanager
async def redis_failing(how: str, local_servers: LocalServers, redis: Redis) -> AsyncIterator[None]:
    """Redis failing writes for the block, `how` as REDIS_FAILURES says; as before after it."""
    server = stoppable(local_servers, "redis")  # the test reconfigures the session's Redis
    if how == "stopped":
        await redis.save()  # the data as it is outlives the outage
        try:
            with stopped(server):
                yield
        finally:
            (server.data_dir / "dump.rdb").unlink(missing_ok=True)  # later restarts start empty
    elif how == "full":
        policy = str((await redis.config_get("maxmemory-policy"))["maxmemory-policy"])
        await redis.config_set("maxmemory-policy", "noeviction")
        await redis.config_set("maxmemory", 1)
        try:
            yield
        finally:
            await redis.config_set("maxmemory", 0)
            await redis.config_set("maxmemory-policy", policy)
    else:
        with socket.socket() as nobody:  # a primary that never answers: no sync, the data kept
            nobody.bind(("127.0.0.1", 0))
            await redis.replicaof("127.0.0.1", nobody.getsockname()[1])
            try:
                yield
            finally:
                await redis.replicaof("NO", "ONE")
