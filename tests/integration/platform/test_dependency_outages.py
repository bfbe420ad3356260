"""A dependency that fails under a call, or refuses to write, is answered UNAVAILABLE (retry later),
never INTERNAL, and a burst larger than the Redis pool waits for a connection instead of failing."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import grpc
import pytest
import redis.exceptions

from a4co.inventory.v1 import inventory_service_pb2 as pb
from a4co.inventory.v1 import inventory_service_pb2_grpc as pb_grpc
from services.platform.grpc.status import details_of
from services.platform.local_servers import ServerUrls
from services.platform.runtime import REDIS_CONNECTIONS, Infrastructure
from tests.integration.services.harness import Keys, settings_for
from tests.support.rpc import inventory_server


class Failing(pb_grpc.InventoryServiceServicer):
    """CheckStock fails the way a lost dependency makes it fail."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def CheckStock(self, request: pb.CheckStockRequest, context: Any) -> pb.CheckStockResponse:  # noqa: N802
        raise self.error

    async def GetStock(self, request: pb.GetStockRequest, context: Any) -> pb.GetStockResponse:  # noqa: N802
        raise self.error

    async def AdjustStock(self, request: pb.AdjustStockRequest, context: Any) -> pb.AdjustStockResponse:  # noqa: N802
        raise self.error


async def answer_to(error: Exception) -> grpc.aio.AioRpcError:
    """What a CheckStock failing with `error` is answered."""
    server = inventory_server(Failing(error))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pb_grpc.InventoryServiceStub(channel).CheckStock(pb.CheckStockRequest(), timeout=10)
    finally:
        await server.stop(grace_s=1)
    return caught.value


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ConnectionError("Too many connections"),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        ConnectionRefusedError(111, "Connection refused"),
        FileNotFoundError(2, "No such file or directory"),
        asyncpg.exceptions.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        ),
        asyncpg.exceptions.DiskFullError('could not extend file "base/16384/16400": No space left on device'),
        asyncpg.exceptions.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
    ],
    ids=[
        "redis-connection",
        "redis-timeout",
        "pg-connection-lost",
        "pg-starting",
        "refused",
        "pg-socket-gone",
        "pg-ended-under-use",
        "pg-disk-full",
        "pg-read-only",
        "pg-too-many-clients",
    ],
)
async def test_a_dependency_outage_is_unavailable_with_its_reason(error: Exception) -> None:
    caught = await answer_to(error)
    assert caught.code() == grpc.StatusCode.UNAVAILABLE
    info = details_of(caught)[0]
    assert info.reason == "DEPENDENCY_UNAVAILABLE"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
        asyncpg.exceptions.SerializationError("could not serialize access due to concurrent update"),
    ],
    ids=["deadlock", "serialization"],
)
async def test_a_transaction_rolled_back_for_a_conflict_is_aborted(error: Exception) -> None:
    """A conflict with a concurrent transaction changed nothing: ABORTED, which a caller may retry
    at once, not INTERNAL."""
    caught = await answer_to(error)
    assert caught.code() == grpc.StatusCode.ABORTED
    info = details_of(caught)[0]
    assert info.reason == "TRANSACTION_CONFLICT"  # type: ignore[union-attr]


async def test_a_burst_larger_than_the_redis_pool_waits_for_connections(
    urls: ServerUrls, prefix: str, keys: Keys
) -> None:
    infra = await Infrastructure.connect(settings_for("inventory", urls, prefix, keys))
    try:
        key = f"{prefix}:burst"
        await infra.redis.set(key, "1")
        # More concurrent commands than connections: each waits its turn, none fails.
        answers = await asyncio.gather(*(infra.redis.get(key) for _ in range(REDIS_CONNECTIONS * 3)))
        assert answers == ["1"] * (REDIS_CONNECTIONS * 3)
        await infra.redis.delete(key)
    finally:
        await infra.close()
