"""The RPC contracts follow the house rules: own request/response per RPC, named APIs present."""

from __future__ import annotations

import importlib
import pkgutil
from collections import Counter

from google.protobuf.descriptor import ServiceDescriptor

import a4co

REQUIRED_RPCS = {
    "a4co.inventory.v1.InventoryService": {"CheckStock", "GetStock", "AdjustStock"},
    "a4co.payments.v1.PaymentsService": {"ValidatePaymentMethod", "GetPayment"},
    "a4co.catalog.v1.CatalogService": {"SearchProducts", "GetProduct"},
    "a4co.identity.v1.IdentityService": {
        "Register",
        "Login",
        "ValidateToken",
        "RefreshToken",
        "Logout",
        "GetProfile",
        "UpdateProfile",
    },
    "a4co.geo.v1.GeoService": {"FindNearbyArtisans", "QuoteDelivery"},
    "a4co.orders.v1.OrdersService": {
        "CreateOrder",
        "GetOrder",
        "ListOrders",
        "CancelOrder",
        "MarkOrderShipped",
        "MarkOrderDelivered",
    },
    "a4co.artisans.v1.ArtisansService": {
        "OnboardArtisan",
        "PublishProduct",
        "UpdateProduct",
        "WithdrawProduct",
        "ListProducts",
    },
    "a4co.notifications.v1.NotificationsService": {
        "ListNotifications",
        "WatchNotifications",
        "MarkNotificationsRead",
    },
    "a4co.loyalty.v1.LoyaltyService": {"GetBalance", "ListLedgerEntries"},
    "a4co.analytics.v1.AnalyticsService": {"GetSalesReport"},
    "a4co.cms.v1.CmsService": {"GetPublicProfile"},
}
NON_IDEMPOTENT = {"CreateOrder", "AdjustStock", "OnboardArtisan", "PublishProduct"}


def all_services() -> list[ServiceDescriptor]:
    services = []
    for info in pkgutil.walk_packages(a4co.__path__, "a4co."):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(info.name)
            services.extend(module.DESCRIPTOR.services_by_name.values())
    return services


def test_every_context_serves_its_rpcs() -> None:
    served = {s.full_name: {m.name for m in s.methods} for s in all_services()}
    for service, rpcs in REQUIRED_RPCS.items():
        assert service in served, f"{service} is missing"
        assert rpcs <= served[service], f"{service} lacks {sorted(rpcs - served[service])}"


def test_every_rpc_has_its_own_request_and_response() -> None:
    used: Counter[str] = Counter()
    for service in all_services():
        package = service.file.package
        for method in service.methods:
            assert method.input_type.full_name == f"{package}.{method.name}Request"
            assert method.output_type.full_name == f"{package}.{method.name}Response"
            used.update([method.input_type.full_name, method.output_type.full_name])
    assert [name for name, n in used.items() if n > 1] == []


def test_rpc_packages_are_versioned_and_apart_from_events() -> None:
    for service in all_services():
        parts = service.file.package.split(".")
        assert parts[0] == "a4co"
        assert parts[-1].startswith("v")
        assert "events" not in parts
        assert service.name.endswith("Service")


def test_non_idempotent_mutations_take_a_request_id() -> None:
    for service in all_services():
        for method in service.methods:
            if method.name in NON_IDEMPOTENT:
                assert "request_id" in method.input_type.fields_by_name, method.full_name


def test_list_rpcs_page_with_tokens() -> None:
    for service in all_services():
        for method in service.methods:
            if method.name.startswith("List"):
                assert {"page_size", "page_token"} <= set(method.input_type.fields_by_name)
                assert "next_page_token" in method.output_type.fields_by_name
