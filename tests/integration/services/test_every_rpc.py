"""Every RPC of the five synchronous services, walked from the descriptors: an empty request is
refused with the offending fields named, a missing token with UNAUTHENTICATED, a wrong role with
PERMISSION_DENIED."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import symbol_database
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from a4co.catalog.v1 import catalog_service_pb2
from a4co.geo.v1 import geo_service_pb2
from a4co.identity.v1 import identity_service_pb2
from a4co.inventory.v1 import inventory_service_pb2
from a4co.payments.v1 import payments_service_pb2
from services.catalog.grpc_api import POLICIES as CATALOG
from services.geo.grpc_api import POLICIES as GEO
from services.identity.grpc_api import POLICIES as IDENTITY
from services.inventory.grpc_api import POLICIES as INVENTORY
from services.payments.grpc_api import POLICIES as PAYMENTS
from services.platform.auth import Role
from services.platform.grpc.interceptor import MethodPolicy
from services.platform.grpc.status import details_of
from tests.integration.services.harness import Keys, RunningService, token

SERVICES: dict[str, tuple[ServiceDescriptor, dict[str, MethodPolicy]]] = {
    "identity": (identity_service_pb2.DESCRIPTOR.services_by_name["IdentityService"], IDENTITY),
    "inventory": (inventory_service_pb2.DESCRIPTOR.services_by_name["InventoryService"], INVENTORY),
    "payments": (payments_service_pb2.DESCRIPTOR.services_by_name["PaymentsService"], PAYMENTS),
    "catalog": (catalog_service_pb2.DESCRIPTOR.services_by_name["CatalogService"], CATALOG),
    "geo": (geo_service_pb2.DESCRIPTOR.services_by_name["GeoService"], GEO),
}
# Requests for which "nothing" is a meaningful question: the caller's own profile, logging out,
# and the newest products.
EMPTY_IS_VALID = {"Logout", "GetProfile", "SearchProducts", "ListPaymentMethods", "ListSessions"}


def rpcs() -> list[tuple[str, MethodDescriptor]]:
    return [(name, m) for name, (service, _) in SERVICES.items() for m in service.methods]


def path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


async def call(
    svc: RunningService, method: MethodDescriptor, metadata: tuple[tuple[str, str], ...] = ()
) -> Any:
    database = symbol_database.Default()
    request_class = database.GetSymbol(method.input_type.full_name)
    response_class = database.GetSymbol(method.output_type.full_name)
    multicallable = svc.channel.unary_unary(
        path(method),
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    return await multicallable(request_class(), metadata=metadata, timeout=10)


async def outcome(pending: Any) -> grpc.StatusCode:
    """The status code a call ends with."""
    try:
        await pending
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def allowed(keys: Keys, service: str, method: MethodDescriptor, user: str = "user-1") -> Any:
    """The metadata of a token whose role may call `method`."""
    policy = SERVICES[service][1][path(method)]
    return token(keys, user, next(iter(policy.roles)) if policy.roles else Role.CUSTOMER)


every_rpc = pytest.mark.parametrize(
    ("service", "method"), rpcs(), ids=lambda x: x if isinstance(x, str) else x.name
)


def test_every_rpc_has_a_policy() -> None:
    for _, (service, policies) in SERVICES.items():
        for method in service.methods:
            assert path(method) in policies, f"{path(method)} has no MethodPolicy"


@every_rpc
async def test_every_rpc_refuses_bad_input_missing_tokens_and_wrong_roles(
    five_shared: dict[str, RunningService], keys: Keys, service: str, method: MethodDescriptor
) -> None:
    svc = five_shared[service]
    policy = SERVICES[service][1][path(method)]
    may = allowed(keys, service, method)

    if method.name in EMPTY_IS_VALID:
        # The made-up user may not exist: NOT_FOUND is an answer, a refusal of the input is not.
        code = await outcome(call(svc, method, may))
        assert code not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL), code
    else:
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await call(svc, method, may)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad.value
        info, violations = details_of(bad.value)
        assert info is not None
        assert info.domain == f"{service}.a4co"
        assert violations, "the offending fields are named"

    if not policy.public:
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await call(svc, method)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    if policy.roles:
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await call(svc, method, token(keys, "user-2", Role.CUSTOMER))
        assert wrong.value.code() == grpc.StatusCode.PERMISSION_DENIED


@every_rpc
async def test_every_rpc_refuses_bytes_that_are_not_its_request_as_bad_input(
    five_shared: dict[str, RunningService], keys: Keys, service: str, method: MethodDescriptor
) -> None:
    svc = five_shared[service]
    raw = svc.channel.unary_unary(path(method), request_serializer=bytes, response_deserializer=bytes)
    # A wire format cut short, and where field 1 is a string, one that is not UTF-8: gRPC alone
    # answers UNKNOWN.
    first = method.input_type.fields_by_number.get(1)
    samples = [b"\xff\xff\xff"]
    if first is not None and first.type == first.TYPE_STRING:
        samples.append(b"\x0a\x02\xff\xfe")
    for data in samples:
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await raw(data, metadata=allowed(keys, service, method), timeout=10)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad.value
        info, _ = details_of(bad.value)
        assert info is not None
        assert (info.reason, info.domain) == ("MALFORMED_REQUEST", f"{service}.a4co")
        assert method.input_type.full_name in (bad.value.details() or "")
