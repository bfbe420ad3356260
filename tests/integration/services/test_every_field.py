"""Edge values in every field of every RPC of the eleven services, one field at a time: integers
at their limits, NaN and infinities, a NUL, SQL, a right-to-left mark, unknown enum values, a
time past the year 9999. However wrong, none may fail a call as an internal error (INTERNAL,
UNKNOWN, UNAVAILABLE): bad input is refused as bad input (decision 29)."""

from __future__ import annotations

import base64
import functools
import importlib
import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest_asyncio
from google.protobuf import symbol_database
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import REGISTRY

from a4co.analytics.v1 import analytics_service_pb2 as analytics_pb
from a4co.catalog.v1 import catalog_service_pb2 as catalog_pb
from a4co.geo.v1 import geo_service_pb2 as geo_pb
from a4co.inventory.v1 import inventory_service_pb2 as inventory_pb
from a4co.payments.v1 import payments_service_pb2 as payments_pb
from a4co.type.v1 import lat_lng_pb2
from services.catalog.domain import encode_page_token
from services.catalog.grpc_api import filters_of
from services.platform.auth import Role
from services.platform.grpc.status import details_of
from services.platform.local_servers import ServerUrls
from tests.integration.services.harness import Keys, RunningService, token
from tests.integration.services.orders.shop import shop
from tests.support.waiting import eventually

SERVICES = (
    "analytics", "artisans", "catalog", "cms", "geo", "identity",
    "inventory", "loyalty", "notifications", "orders", "payments",
)  # fmt: skip
INTERNAL = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE)
HERE = lat_lng_pb2.LatLng(latitude=37.99, longitude=-3.47)
# Requests valid on their own, for methods whose empty request is refused before its handler: the
# edge values are set in them, so that they reach the handler too.
BASES: dict[str, Callable[[], Message]] = {
    "/a4co.analytics.v1.AnalyticsService/GetSalesReport": lambda: analytics_pb.GetSalesReportRequest(
        start_time=Timestamp(seconds=1_700_000_000), end_time=Timestamp(seconds=1_900_000_000)
    ),
    "/a4co.catalog.v1.CatalogService/SearchProducts": lambda: catalog_pb.SearchProductsRequest(
        query="aceite", near=HERE, radius_km=30
    ),
    "/a4co.geo.v1.GeoService/FindNearbyArtisans": lambda: geo_pb.FindNearbyArtisansRequest(
        location=HERE, radius_km=30
    ),
    "/a4co.geo.v1.GeoService/QuoteDelivery": lambda: geo_pb.QuoteDeliveryRequest(
        artisan_id="a-1", destination=HERE
    ),
    "/a4co.inventory.v1.InventoryService/CheckStock": lambda: inventory_pb.CheckStockRequest(
        lines=[inventory_pb.StockRequestLine(product_id="p-1", quantity=1)]
    ),
    "/a4co.payments.v1.PaymentsService/ValidatePaymentMethod": lambda: (
        payments_pb.ValidatePaymentMethodRequest(
            card=payments_pb.Card(number="4242 4242 4242 4242", exp_month=12, exp_year=2031, cvc="123")
        )
    ),
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def everything(urls: ServerUrls, keys: Keys) -> AsyncIterator[dict[str, RunningService]]:
    """Every service, in-process, shared by this module's one test."""
    async with shop(urls, "t" + uuid.uuid4().hex[:12], keys, subscribers=True) as running:
        yield running


# Values at the edges of each scalar type, and strings that PostgreSQL, SQL or a parser could
# mistake: each is set in one field of an otherwise empty request at a time.
EDGES: dict[int, list[Any]] = {
    FieldDescriptor.TYPE_INT32: [-1, 2**31 - 1, -(2**31)],
    FieldDescriptor.TYPE_INT64: [-1, 2**63 - 1, -(2**63)],
    FieldDescriptor.TYPE_UINT32: [2**32 - 1],
    FieldDescriptor.TYPE_UINT64: [2**64 - 1],
    FieldDescriptor.TYPE_DOUBLE: [math.nan, math.inf, -math.inf, 1e308, -0.0],
    FieldDescriptor.TYPE_FLOAT: [math.nan, math.inf],
    FieldDescriptor.TYPE_STRING: [" ", "ñ✓😀", "a\x00b", "'; DROP TABLE users; --", "%_\\", "\u202e"],
    FieldDescriptor.TYPE_BOOL: [True],
    FieldDescriptor.TYPE_ENUM: [99, -1],
}


def _set(message: Any, name: str, value: Any) -> None:
    setattr(message, name, value)


def _append(message: Any, name: str, value: Any) -> None:
    getattr(message, name).append(value)


def _far_future(message: Any, name: str) -> None:
    getattr(message, name).MergeFrom(Timestamp(seconds=2**40))  # past 9999: protobuf cannot convert it


def _within(message: Any, field: FieldDescriptor, set_inner: Callable[[Any], None]) -> None:
    set_inner(getattr(message, field.name).add() if field.is_repeated else getattr(message, field.name))


def _edges(message: Descriptor, depth: int = 0) -> Iterator[tuple[str, Callable[[Any], None]]]:
    """(field = value, a function that sets it) for every scalar field under `message`."""
    for f in message.fields:
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            inner = f.message_type
            if inner is None or depth > 2:
                continue
            if inner.full_name == "google.protobuf.Timestamp":
                yield f"{f.name}=year 36812", functools.partial(_far_future, name=f.name)
                continue
            for name, set_inner in _edges(inner, depth + 1):
                yield f"{f.name}.{name}", functools.partial(_within, field=f, set_inner=set_inner)
            continue
        for value in EDGES.get(f.type, []):
            setter = _append if f.is_repeated else _set
            yield f"{f.name}={value!r}", functools.partial(setter, name=f.name, value=value)


async def test_no_edge_value_in_any_field_fails_a_call_as_an_internal_error(
    everything: dict[str, RunningService], keys: Keys
) -> None:
    assert set(everything) == set(SERVICES)
    failed, calls, seen = [], 0, set()
    database = symbol_database.Default()
    for service in SERVICES:
        api = importlib.import_module(f"services.{service}.grpc_api")
        for method in api.pb.DESCRIPTOR.services_by_name[api.SERVICE.rsplit(".", 1)[1]].methods:
            path = f"/{api.SERVICE}/{method.name}"
            seen.add(path)
            policy = api.POLICIES[path]
            role = next(iter(policy.roles)) if policy.roles else Role.CUSTOMER
            metadata = token(keys, "6a1c6b39-7d0e-4a77-9a4f-9f0f3f1c2b11", role)
            request_class = database.GetSymbol(method.input_type.full_name)
            base = BASES.get(path, request_class)
            response_class = database.GetSymbol(method.output_type.full_name)
            rpc = everything[service].channel.unary_unary(
                path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )
            for name, set_edge in _edges(method.input_type):
                request = base()
                try:
                    set_edge(request)
                except (ValueError, TypeError):  # a value the field cannot hold at all
                    continue
                calls += 1
                try:
                    await rpc(request, metadata=metadata, timeout=10)
                except grpc.aio.AioRpcError as error:
                    if error.code() in INTERNAL:
                        failed.append((service, method.name, name, error.code().name))
    assert set(BASES) <= seen, "every base request is for a method that exists"
    assert calls > 600
    assert failed == []


# The search's engines and paths: the index with words, with words near a point, and without words.
PAGED: dict[str, list[Callable[[], Message]]] = {
    "/a4co.catalog.v1.CatalogService/SearchProducts": [
        lambda: catalog_pb.SearchProductsRequest(query="aceite"),
        BASES["/a4co.catalog.v1.CatalogService/SearchProducts"],
        lambda: catalog_pb.SearchProductsRequest(category="aceite"),
    ]
}


def _page_tokens(request: Message) -> Iterator[tuple[str, str]]:
    """Tokens whose offsets lie far past any result, which a client can write: in a search's
    format (no secret), and as a bare offset, the lists' format before decision 41."""
    for offset in (10**10, 2**63, 10**29):
        yield f"list offset {offset}", base64.urlsafe_b64encode(str(offset).encode()).decode()
        if isinstance(request, catalog_pb.SearchProductsRequest):
            fingerprint = filters_of(request).fingerprint()
            yield f"search offset {offset}", encode_page_token(offset, fingerprint)


async def test_a_page_token_far_past_the_results_is_refused_as_invalid(
    everything: dict[str, RunningService], keys: Keys
) -> None:
    """Such a token once made the search index ask for memory for that many results, which
    aborted the catalog process (2³¹ results: "memory allocation of 34359738688 bytes failed")."""
    await eventually(
        lambda: REGISTRY.get_sample_value("a4co_search_index_ready") == 1, what="the search index ready"
    )
    database = symbol_database.Default()
    refused, calls = [], 0
    for service in SERVICES:
        api = importlib.import_module(f"services.{service}.grpc_api")
        for method in api.pb.DESCRIPTOR.services_by_name[api.SERVICE.rsplit(".", 1)[1]].methods:
            if "page_token" not in method.input_type.fields_by_name:
                continue
            path = f"/{api.SERVICE}/{method.name}"
            request_class = database.GetSymbol(method.input_type.full_name)
            rpc = everything[service].channel.unary_unary(
                path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=database.GetSymbol(method.output_type.full_name).FromString,
            )
            policy = api.POLICIES[path]
            role = next(iter(policy.roles)) if policy.roles else Role.CUSTOMER
            metadata = token(keys, "6a1c6b39-7d0e-4a77-9a4f-9f0f3f1c2b11", role)
            for make in PAGED.get(path, [request_class]):
                for name, page_token in _page_tokens(make()):
                    request: Any = make()
                    request.page_token = page_token
                    calls += 1
                    try:
                        await rpc(request, metadata=metadata, timeout=10)
                    except grpc.aio.AioRpcError as error:
                        fields = tuple(f for f, _ in details_of(error)[1])
                        refused.append((method.name, name, error.code().name, fields))
                    else:
                        refused.append((method.name, name, "OK", ()))
    assert calls >= 24  # ListOrders, ListNotifications, ListProducts and SearchProducts three ways
    assert {r for r in refused if r[2:] != ("INVALID_ARGUMENT", ("page_token",))} == set()
