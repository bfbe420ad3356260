"""catalog's gRPC servicer and request rules."""

from __future__ import annotations

from typing import Any

import grpc

from a4co.catalog.v1 import catalog_service_pb2 as pb
from a4co.catalog.v1 import catalog_service_pb2_grpc as pb_grpc
from services.catalog import handlers
from services.catalog.domain import ProductView, SearchFilters
from services.platform import return_exceptions
from services.platform.grpc.interceptor import MethodPolicy
from services.platform.grpc.server import Registration
from services.platform.timestamps import set_timestamp
from services.platform.validation import MAX_KEY, Violations

SERVICE = pb.DESCRIPTOR.services_by_name["CatalogService"].full_name
Context = grpc.aio.ServicerContext[Any, Any]
MAX_RADIUS_KM = 500.0
MAX_PAGE_TOKEN = 200  # this API's tokens: 36 characters for offset 20, 47 for offset 10⁹


def check_search(request: pb.SearchProductsRequest) -> None:
    """Short query and keys, EUR prices in order, a radius with a point, a page of at most 100."""
    v = Violations()
    v.length(request.query, "query", 0, 200)
    v.length(request.category, "category", 0, MAX_KEY)
    v.length(request.artisan_id, "artisan_id", 0, MAX_KEY)
    v.length(request.page_token, "page_token", 0, MAX_PAGE_TOKEN)
    for name in ("min_price", "max_price"):
        if request.HasField(name):
            price = getattr(request, name)
            v.check(price.currency_code in ("", "EUR"), f"{name}.currency_code", "must be EUR")
            v.check(price.amount_cents >= 0, f"{name}.amount_cents", "must not be negative")
    if request.HasField("min_price") and request.HasField("max_price"):
        v.check(
            request.min_price.amount_cents <= request.max_price.amount_cents,
            "max_price",
            "must not be below min_price",
        )
    if request.HasField("near"):
        v.between(request.near.latitude, "near.latitude", -90, 90)
        v.between(request.near.longitude, "near.longitude", -180, 180)
        v.check(
            0 < request.radius_km <= MAX_RADIUS_KM,
            "radius_km",
            f"must be more than 0 and at most {MAX_RADIUS_KM:g}",
        )
    else:
        v.check(request.radius_km == 0, "radius_km", "needs near")
    v.between(request.page_size, "page_size", 0, 100)
    v.raise_if_any()


def check_get(request: pb.GetProductRequest) -> None:
    """The product is required."""
    v = Violations()
    v.key(request.product_id, "product_id")
    v.raise_if_any()


POLICIES = {
    f"/{SERVICE}/SearchProducts": MethodPolicy(public=True, validator=check_search),
    f"/{SERVICE}/GetProduct": MethodPolicy(public=True, validator=check_get),
}


def filters_of(request: pb.SearchProductsRequest) -> SearchFilters:
    """The search filters of a request."""
    return SearchFilters(
        query=request.query.strip(),
        category=request.category,
        artisan_id=request.artisan_id,
        min_price_cents=request.min_price.amount_cents if request.HasField("min_price") else None,
        max_price_cents=request.max_price.amount_cents if request.HasField("max_price") else None,
        near=(request.near.latitude, request.near.longitude) if request.HasField("near") else None,
        radius_km=request.radius_km,
        in_stock_only=request.in_stock_only,
    )


def fill_product(target: pb.Product, p: ProductView) -> None:
    """Write a product into a response's Product field in place.

    A search page holds twenty products: filling the response's own fields costs half of building
    each Product (and its Money, LatLng and Timestamp) and copying it in (docs/performance-history.md).
    """
    target.product_id = p.product_id
    target.artisan_id = p.artisan_id
    target.artisan_name = p.artisan_name
    target.name = p.name
    target.description = p.description
    target.category = p.category
    price, location = target.price, target.location  # each sub-message fetched once
    price.currency_code = p.currency_code
    price.amount_cents = p.price_cents
    target.locality = p.locality
    location.latitude = p.latitude
    location.longitude = p.longitude
    target.available_quantity = p.available
    target.in_stock = p.available > 0
    target.low_stock = p.low_stock
    set_timestamp(target.publish_time, p.publish_time)
    target.revision = p.revision
    if p.return_exception:
        target.return_exception = return_exceptions.value_of(p.return_exception)


class CatalogServicer(pb_grpc.CatalogServiceServicer):
    """The CatalogService RPCs."""

    def __init__(self, deps: handlers.Deps) -> None:
        self.deps = deps

    async def SearchProducts(
        self, request: pb.SearchProductsRequest, context: Context
    ) -> pb.SearchProductsResponse:
        """A page of ranked results."""
        page = await handlers.search_products(
            self.deps, filters_of(request), request.page_size or 20, request.page_token
        )
        response = pb.SearchProductsResponse(next_page_token=page.next_page_token, total_size=page.total)
        for h in page.hits:
            result = response.results.add(score=round(h.score, 6), distance_km=round(h.distance_km, 3))
            fill_product(result.product, h.product)
        return response

    async def GetProduct(self, request: pb.GetProductRequest, context: Context) -> pb.GetProductResponse:
        """One product."""
        response = pb.GetProductResponse()
        fill_product(response.product, await handlers.get_product(self.deps, request.product_id))
        return response


def registration(deps: handlers.Deps) -> Registration:
    """How the runtime serves catalog."""
    servicer = CatalogServicer(deps)
    return Registration(
        SERVICE, lambda server: pb_grpc.add_CatalogServiceServicer_to_server(servicer, server)
    )
