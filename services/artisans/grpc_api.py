"""artisans' gRPC servicer and request rules."""

from __future__ import annotations

from typing import Any

import grpc

from a4co.artisans.v1 import artisans_service_pb2 as pb
from a4co.artisans.v1 import artisans_service_pb2_grpc as pb_grpc
from a4co.type.v1 import lat_lng_pb2
from services.artisans import handlers
from services.artisans.domain import (
    CRAFTS,
    EDITABLE_FIELDS,
    WORKSHOP_FIELDS,
    Listing,
    Product,
    Registered,
    Workshop,
    in_jaen,
)
from services.platform import return_exceptions
from services.platform.addresses import address_from_dict, address_to_dict, check_address
from services.platform.auth import Role, current_principal
from services.platform.grpc.interceptor import MethodPolicy
from services.platform.grpc.server import Registration
from services.platform.paging import Page, check_list
from services.platform.timestamps import optional_timestamp, to_timestamp
from services.platform.validation import Violations

SERVICE = pb.DESCRIPTOR.services_by_name["ArtisansService"].full_name
# The most a product may cost, 1,000,000.00 EUR: an order of 50 lines of 1,000 units at this price
# still totals far within the 64-bit cents of Money and of PostgreSQL's bigint.
MAX_PRICE_CENTS = 100_000_000
MAX_UNITS = 1_000_000  # a product's first stock and its low-stock threshold, as AdjustStock's
Context = grpc.aio.ServicerContext[Any, Any]


def _check_workshop_fields(
    v: Violations, workshop: pb.OnboardArtisanRequest | pb.Artisan, paths: set[str], prefix: str
) -> None:
    """The rules of the named fields of a workshop: a name, a known craft, a town, a point in the
    province of Jaén, an address, a short presentation."""
    if "display_name" in paths:
        v.length(workshop.display_name.strip(), f"{prefix}display_name", 2, 80)
    if "craft" in paths:
        v.check(workshop.craft in CRAFTS, f"{prefix}craft", f"must be one of {', '.join(sorted(CRAFTS))}")
    if "locality" in paths:
        v.length(workshop.locality.strip(), f"{prefix}locality", 2, 80)
    if "bio" in paths:
        v.length(workshop.bio, f"{prefix}bio", 0, 1000)
    if "address" in paths:
        check_address(v, workshop.address, f"{prefix}address")
    if "location" in paths and v.check(workshop.HasField("location"), f"{prefix}location", "is required"):
        v.check(
            in_jaen(workshop.location.latitude, workshop.location.longitude),
            f"{prefix}location",
            "must be within the province of Jaén",
        )


def check_onboard(request: pb.OnboardArtisanRequest) -> None:
    """A UUID request, a name, a known craft, a town, a point in the province of Jaén."""
    v = Violations()
    v.uuid(request.request_id, "request_id")
    _check_workshop_fields(v, request, set(WORKSHOP_FIELDS), "")
    v.raise_if_any()


def check_update_artisan(request: pb.UpdateArtisanRequest) -> None:
    """A mask of editable fields, and those fields' rules."""
    v = Violations()
    paths = list(request.update_mask.paths)
    v.check(bool(paths), "update_mask", "must name at least one field")
    for path in paths:
        v.check(
            path in WORKSHOP_FIELDS,
            "update_mask",
            f"{path!r} cannot be changed; editable: {', '.join(WORKSHOP_FIELDS)}",
        )
    _check_workshop_fields(v, request.artisan, set(paths), "artisan.")
    v.check(request.expected_revision >= 0, "expected_revision", "must not be negative")
    v.raise_if_any()


def _check_product_fields(
    v: Violations, product: pb.PublishProductRequest | pb.PublishedProduct, paths: set[str], prefix: str
) -> None:
    """The rules of the named fields a customer sees: a name, a description, a known category, a
    EUR price up to 1,000,000.00."""
    if "name" in paths:
        v.length(product.name.strip(), f"{prefix}name", 3, 120)
    if "description" in paths:
        v.length(product.description, f"{prefix}description", 0, 2000)
    if "category" in paths:
        v.check(
            product.category in CRAFTS, f"{prefix}category", f"must be one of {', '.join(sorted(CRAFTS))}"
        )
    if "price" in paths:
        v.check(product.price.currency_code in ("", "EUR"), f"{prefix}price.currency_code", "must be EUR")
        v.between(product.price.amount_cents, f"{prefix}price.amount_cents", 1, MAX_PRICE_CENTS)
    if "return_exception" in paths:
        v.check(
            return_exceptions.known(product.return_exception),
            f"{prefix}return_exception",
            "must be one of RETURN_EXCEPTION_UNSPECIFIED (none), _PERISHABLE or _PERSONALISED",
        )


def check_publish(request: pb.PublishProductRequest) -> None:
    """A UUID request, a name, a known category, a EUR price up to 1,000,000.00, stock up to a million."""
    v = Violations()
    v.uuid(request.request_id, "request_id")
    _check_product_fields(v, request, set(EDITABLE_FIELDS), "")
    v.between(request.initial_stock, "initial_stock", 0, MAX_UNITS)
    v.between(request.low_stock_threshold, "low_stock_threshold", 0, MAX_UNITS)
    v.raise_if_any()


def check_update(request: pb.UpdateProductRequest) -> None:
    """A product id, a mask of editable fields, and those fields' rules."""
    v = Violations()
    v.uuid(request.product_id, "product_id")
    paths = list(request.update_mask.paths)
    v.check(bool(paths), "update_mask", "must name at least one field")
    for path in paths:
        v.check(
            path in EDITABLE_FIELDS,
            "update_mask",
            f"{path!r} cannot be changed; editable: {', '.join(EDITABLE_FIELDS)}",
        )
    _check_product_fields(v, request.product, set(paths), "product.")
    v.check(request.expected_revision >= 0, "expected_revision", "must not be negative")
    v.raise_if_any()


def check_withdraw(request: pb.WithdrawProductRequest) -> None:
    """A product id."""
    v = Violations()
    v.uuid(request.product_id, "product_id")
    v.raise_if_any()


def check_offboard(request: pb.OffboardArtisanRequest) -> None:
    """No artisan, or a UUID (an admin's naming one: checked with the caller's role)."""
    v = Violations()
    if request.artisan_id:
        v.uuid(request.artisan_id, "artisan_id")
    v.raise_if_any()


POLICIES = {
    f"/{SERVICE}/OnboardArtisan": MethodPolicy(roles=frozenset({Role.ARTISAN}), validator=check_onboard),
    f"/{SERVICE}/GetArtisan": MethodPolicy(roles=frozenset({Role.ARTISAN})),
    f"/{SERVICE}/UpdateArtisan": MethodPolicy(
        roles=frozenset({Role.ARTISAN}), validator=check_update_artisan
    ),
    f"/{SERVICE}/PublishProduct": MethodPolicy(roles=frozenset({Role.ARTISAN}), validator=check_publish),
    f"/{SERVICE}/UpdateProduct": MethodPolicy(roles=frozenset({Role.ARTISAN}), validator=check_update),
    f"/{SERVICE}/WithdrawProduct": MethodPolicy(roles=frozenset({Role.ARTISAN}), validator=check_withdraw),
    f"/{SERVICE}/ListProducts": MethodPolicy(roles=frozenset({Role.ARTISAN}), validator=check_list),
    f"/{SERVICE}/OffboardArtisan": MethodPolicy(
        roles=frozenset({Role.ARTISAN, Role.ADMIN}), validator=check_offboard
    ),
}


def workshop_to_pb(registered: Registered) -> pb.Artisan:
    """A workshop as a message."""
    w = registered.workshop
    return pb.Artisan(
        artisan_id=w.artisan_id,
        display_name=w.display_name,
        craft=w.craft,
        locality=w.locality,
        location=lat_lng_pb2.LatLng(latitude=w.latitude, longitude=w.longitude),
        address=address_from_dict(w.address),
        bio=w.bio,
        onboard_time=to_timestamp(registered.onboard_time),
        revision=registered.revision,
        update_time=to_timestamp(registered.update_time),
        offboard_time=optional_timestamp(registered.offboard_time),
    )


def _workshop(request: pb.OnboardArtisanRequest | pb.Artisan) -> Workshop:
    """The values a request carries for a workshop, as a workshop (no id)."""
    return Workshop(
        "",
        request.display_name,
        request.craft,
        request.locality,
        request.location.latitude,
        request.location.longitude,
        address_to_dict(request.address),
        request.bio,
    )


def product_to_pb(listing: Listing) -> pb.PublishedProduct:
    """A published product as a message."""
    p = listing.product
    return pb.PublishedProduct(
        **handlers.shown(p),
        initial_stock=p.initial_stock,
        low_stock_threshold=p.low_stock_threshold,
        publish_time=to_timestamp(listing.publish_time),
        revision=listing.revision,
        update_time=to_timestamp(listing.update_time),
        withdraw_time=optional_timestamp(listing.withdraw_time),
    )


def _changes(product: pb.PublishedProduct) -> Product:
    """The values a request carries for a product, as a product (ids and stock unused)."""
    return Product(
        "",
        "",
        product.name,
        product.description,
        product.category,
        product.price.amount_cents,
        product.price.currency_code or "EUR",
        0,
        0,
        return_exceptions.name_of(product.return_exception),
    )


class ArtisansServicer(pb_grpc.ArtisansServiceServicer):
    """The ArtisansService RPCs."""

    def __init__(self, deps: handlers.Deps) -> None:
        self.deps = deps

    async def OnboardArtisan(
        self, request: pb.OnboardArtisanRequest, context: Context
    ) -> pb.OnboardArtisanResponse:
        """Onboard the caller's workshop."""
        stored = await handlers.onboard(
            self.deps, current_principal(), request.request_id, _workshop(request)
        )
        return pb.OnboardArtisanResponse(artisan=workshop_to_pb(stored))

    async def GetArtisan(self, request: pb.GetArtisanRequest, context: Context) -> pb.GetArtisanResponse:
        """The caller's workshop."""
        return pb.GetArtisanResponse(
            artisan=workshop_to_pb(await handlers.get_workshop(self.deps, current_principal()))
        )

    async def UpdateArtisan(
        self, request: pb.UpdateArtisanRequest, context: Context
    ) -> pb.UpdateArtisanResponse:
        """Change the caller's workshop."""
        stored = await handlers.update_workshop(
            self.deps,
            current_principal(),
            _workshop(request.artisan),
            list(request.update_mask.paths),
            request.expected_revision,
        )
        return pb.UpdateArtisanResponse(artisan=workshop_to_pb(stored))

    async def PublishProduct(
        self, request: pb.PublishProductRequest, context: Context
    ) -> pb.PublishProductResponse:
        """Publish one of the caller's products."""
        product = Product(
            "",
            "",
            request.name,
            request.description,
            request.category,
            request.price.amount_cents,
            request.price.currency_code or "EUR",
            request.initial_stock,
            request.low_stock_threshold,
            return_exceptions.name_of(request.return_exception),
        )
        listing = await handlers.publish(self.deps, current_principal(), request.request_id, product)
        return pb.PublishProductResponse(product=product_to_pb(listing))

    async def UpdateProduct(
        self, request: pb.UpdateProductRequest, context: Context
    ) -> pb.UpdateProductResponse:
        """Change one of the caller's products."""
        listing = await handlers.update(
            self.deps,
            current_principal(),
            request.product_id,
            _changes(request.product),
            list(request.update_mask.paths),
            request.expected_revision,
        )
        return pb.UpdateProductResponse(product=product_to_pb(listing))

    async def WithdrawProduct(
        self, request: pb.WithdrawProductRequest, context: Context
    ) -> pb.WithdrawProductResponse:
        """Take one of the caller's products off sale."""
        listing = await handlers.withdraw(self.deps, current_principal(), request.product_id)
        return pb.WithdrawProductResponse(product=product_to_pb(listing))

    async def ListProducts(
        self, request: pb.ListProductsRequest, context: Context
    ) -> pb.ListProductsResponse:
        """The caller's products, newest first."""
        page = Page.of(request, ("products", request.show_withdrawn))
        found, token = page.split(
            await handlers.list_products(self.deps, current_principal(), request.show_withdrawn, page),
            lambda listed: (listed.publish_time, listed.product.product_id),
        )
        return pb.ListProductsResponse(products=[product_to_pb(p) for p in found], next_page_token=token)

    async def OffboardArtisan(
        self, request: pb.OffboardArtisanRequest, context: Context
    ) -> pb.OffboardArtisanResponse:
        """Take the caller's workshop, or the one an admin names, out of the marketplace."""
        stored, withdrawn = await handlers.offboard(self.deps, current_principal(), request.artisan_id)
        return pb.OffboardArtisanResponse(artisan=workshop_to_pb(stored), withdrawn_products=withdrawn)


def registration(deps: handlers.Deps) -> Registration:
    """How the runtime serves artisans."""
    servicer = ArtisansServicer(deps)
    return Registration(
        SERVICE, lambda server: pb_grpc.add_ArtisansServiceServicer_to_server(servicer, server)
    )
