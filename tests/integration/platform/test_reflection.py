"""Reflection serves the contracts with their comments, as grpcurl and other teams' tools read them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from a4co.catalog.v1 import catalog_service_pb2
from a4co.inventory.v1 import inventory_service_pb2 as inventory_pb
from a4co.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from services.platform.grpc.server import GrpcServer
from tests.support.rpc import INVENTORY, inventory_server

# The leading comments of InventoryService (path: the file's service 0) and of its method
# CheckStock (service 0, method 0), as inventory_service.proto writes them.
SERVICE_COMMENT = (
    " InventoryService answers how much of each product can be sold, and lets\n"
    " artisans keep their stock on hand up to date.\n"
)
CHECK_STOCK_COMMENT = " CheckStock tells, for each line, whether the requested quantity is\n"
# Reflection as gRPC names it now, and as it did (grpcio-reflection's own).
V1, V1ALPHA = "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"


class Empty(inventory_grpc.InventoryServiceServicer):
    """Answers every call with an empty response: what is tried here is reflection."""

    async def CheckStock(self, request: Any, context: Any) -> inventory_pb.CheckStockResponse:  # noqa: N802
        return inventory_pb.CheckStockResponse()

    async def GetStock(self, request: Any, context: Any) -> inventory_pb.GetStockResponse:  # noqa: N802
        return inventory_pb.GetStockResponse()

    async def AdjustStock(self, request: Any, context: Any) -> inventory_pb.AdjustStockResponse:  # noqa: N802
        return inventory_pb.AdjustStockResponse()


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    served = inventory_server(Empty())
    await served.start()
    yield served
    await served.stop(grace_s=1)


async def reflect(
    address: str, request: reflection_pb2.ServerReflectionRequest, service: str = V1
) -> reflection_pb2.ServerReflectionResponse:
    """One request to `service`; v1's messages are v1alpha's on the wire."""
    async with grpc.aio.insecure_channel(address) as channel:
        info = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        async for response in info(iter([request]), timeout=10):
            assert isinstance(response, reflection_pb2.ServerReflectionResponse)
            return response
    raise AssertionError("reflection answered nothing")


def files_of(
    response: reflection_pb2.ServerReflectionResponse,
) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    return {
        file.name: file
        for file in map(
            descriptor_pb2.FileDescriptorProto.FromString,
            response.file_descriptor_response.file_descriptor_proto,
        )
    }


def leading_comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {tuple(location.path): location.leading_comments for location in file.source_code_info.location}


@pytest.mark.parametrize("service", [V1, V1ALPHA])
async def test_a_service_s_file_is_served_with_its_comments_and_its_dependencies(
    server: GrpcServer, service: str
) -> None:
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=INVENTORY)
    response = await reflect(server.address, request, service)
    files = files_of(response)
    assert set(files) == {"a4co/inventory/v1/inventory_service.proto", "google/protobuf/timestamp.proto"}
    inventory = files["a4co/inventory/v1/inventory_service.proto"]
    comments = leading_comments(inventory)
    assert comments[(6, 0)] == SERVICE_COMMENT
    assert comments[(6, 0, 2, 0)].startswith(CHECK_STOCK_COMMENT)
    # Every message and field of the file is documented (tests/unit/contracts/test_comments.py).
    assert all(comments.get((4, m)) for m in range(len(inventory.message_type)))
    # A well-known type, not ours, is served as the running code holds it.
    assert not files["google/protobuf/timestamp.proto"].HasField("source_code_info")


async def test_a_file_asked_for_by_name_brings_its_documented_dependencies(server: GrpcServer) -> None:
    # Any contract the process imported is served, as a service serves those of the services it calls.
    catalog = catalog_service_pb2.DESCRIPTOR.name
    response = await reflect(server.address, reflection_pb2.ServerReflectionRequest(file_by_filename=catalog))
    files = files_of(response)
    assert {catalog, "a4co/type/v1/money.proto", "a4co/type/v1/lat_lng.proto"} <= set(files)
    assert leading_comments(files[catalog])[(6, 0)].startswith(" CatalogService finds products")
    money = leading_comments(files["a4co/type/v1/money.proto"])
    assert money[(4, 0)].startswith(" Money is")


async def test_unknown_symbols_and_files_are_not_found(server: GrpcServer) -> None:
    for request in (
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="a4co.nothing.v1.Nothing"),
        reflection_pb2.ServerReflectionRequest(file_by_filename="a4co/nothing.proto"),
    ):
        response = await reflect(server.address, request)
        assert response.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


@pytest.mark.parametrize("service", [V1, V1ALPHA])
async def test_services_are_listed_with_health_and_reflection(server: GrpcServer, service: str) -> None:
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    response = await reflect(server.address, request, service)
    assert [s.name for s in response.list_services_response.service] == sorted(
        [INVENTORY, "grpc.health.v1.Health", V1, V1ALPHA]
    )


async def test_reflection_describes_itself_under_both_names(server: GrpcServer) -> None:
    for service, package in ((V1, "grpc.reflection.v1"), (V1ALPHA, "grpc.reflection.v1alpha")):
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=service)
        (file,) = files_of(await reflect(server.address, request)).values()
        assert file.package == package
        (method,) = file.service[0].method
        assert (method.input_type, method.output_type) == (
            f".{package}.ServerReflectionRequest",
            f".{package}.ServerReflectionResponse",
        )
