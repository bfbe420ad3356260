"""geo's gRPC servicer and request rules."""

from __future__ import annotations

from typing import Any

import grpc

from a4co.geo.v1 import geo_service_pb2 as pb
from a4co.geo.v1 import geo_service_pb2_grpc as pb_grpc
from a4co.type.v1 import lat_lng_pb2, money_pb2
from services.geo import handlers
from services.geo.domain import Point
from services.platform.grpc.interceptor import MethodPolicy
from services.platform.grpc.server import Registration
from services.platform.validation import MAX_KEY, Violations

SERVICE = pb.DESCRIPTOR.services_by_name["GeoService"].full_name
Context = grpc.aio.ServicerContext[Any, Any]
MAX_RADIUS_KM = 200.0


def check_point(v: Violations, field: str, point: lat_lng_pb2.LatLng, present: bool) -> None:
    """A point must be given and lie on Earth."""
    if not v.check(present, field, "is required"):
        return
    v.between(point.latitude, f"{field}.latitude", -90, 90)
    v.between(point.longitude, f"{field}.longitude", -180, 180)


def check_nearby(request: pb.FindNearbyArtisansRequest) -> None:
    """A point, a radius up to 200 km, a page of at most 100, a craft's short name if any."""
    v = Violations()
    check_point(v, "location", request.location, request.HasField("location"))
    v.check(
        0 < request.radius_km <= MAX_RADIUS_KM,
        "radius_km",
        f"must be more than 0 and at most {MAX_RADIUS_KM:g}",
    )
    v.between(request.page_size, "page_size", 0, 100)
    v.at_most(request.craft, "craft", MAX_KEY)
    v.raise_if_any()


def check_quote(request: pb.QuoteDeliveryRequest) -> None:
    """An artisan and a destination."""
    v = Violations()
    v.key(request.artisan_id, "artisan_id")
    check_point(v, "destination", request.destination, request.HasField("destination"))
    v.raise_if_any()


POLICIES = {
    f"/{SERVICE}/FindNearbyArtisans": MethodPolicy(public=True, validator=check_nearby),
    f"/{SERVICE}/QuoteDelivery": MethodPolicy(public=True, validator=check_quote),
}


class GeoServicer(pb_grpc.GeoServiceServicer):
    """The GeoService RPCs."""

    def __init__(self, deps: handlers.Deps) -> None:
        self.deps = deps

    async def FindNearbyArtisans(
        self, request: pb.FindNearbyArtisansRequest, context: Context
    ) -> pb.FindNearbyArtisansResponse:
        """Workshops near a point."""
        center = Point(request.location.latitude, request.location.longitude)
        found = await handlers.find_nearby(
            self.deps, center, request.radius_km, request.craft, request.page_size or 20
        )
        # Each workshop written into the response in place, not built apart and copied in.
        response = pb.FindNearbyArtisansResponse()
        for w, distance, count in found:
            artisan = response.artisans.add(
                artisan_id=w.artisan_id,
                display_name=w.display_name,
                craft=w.craft,
                locality=w.locality,
                distance_km=round(distance, 3),
                product_count=count,
            )
            artisan.location.latitude = w.location.latitude
            artisan.location.longitude = w.location.longitude
        return response

    async def QuoteDelivery(
        self, request: pb.QuoteDeliveryRequest, context: Context
    ) -> pb.QuoteDeliveryResponse:
        """The delivery fee to a point."""
        destination = Point(request.destination.latitude, request.destination.longitude)
        q = await handlers.quote_delivery(self.deps, request.artisan_id, destination)
        return pb.QuoteDeliveryResponse(
            deliverable=q.deliverable,
            distance_km=q.distance_km,
            fee=money_pb2.Money(currency_code="EUR", amount_cents=q.fee_cents),
            zone=q.zone,
            estimated_days=q.days,
            reason=q.reason,
        )


def registration(deps: handlers.Deps) -> Registration:
    """How the runtime serves geo."""
    servicer = GeoServicer(deps)
    return Registration(SERVICE, lambda server: pb_grpc.add_GeoServiceServicer_to_server(servicer, server))
