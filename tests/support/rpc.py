"""Assertions on gRPC calls, and a platform server around a test servicer."""

from __future__ import annotations

import grpc
import pytest

from a4co.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from services.platform.grpc.interceptor import MethodPolicy, PlatformInterceptor
from services.platform.grpc.server import GrpcServer, Registration

INVENTORY = "a4co.inventory.v1.InventoryService"


async def failure(call: object) -> grpc.aio.AioRpcError:
    """Await a call that must fail, and return its error."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


def inventory_server(
    servicer: inventory_grpc.InventoryServiceServicer,
    *,
    max_concurrent_rpcs: int | None = None,
    acceptors: int = 4,
) -> GrpcServer:
    """`servicer` served the way a service serves it, with CheckStock public."""
    interceptor = PlatformInterceptor(
        service="inventory",
        domain="inventory.a4co",
        policies={f"/{INVENTORY}/CheckStock": MethodPolicy(public=True)},
        verifier=None,
    )
    add = inventory_grpc.add_InventoryServiceServicer_to_server
    registration = Registration(INVENTORY, lambda server: add(servicer, server))
    return GrpcServer(
        [registration], interceptor, max_concurrent_rpcs=max_concurrent_rpcs, acceptors=acceptors
    )
