"""analytics' gRPC servicer."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import grpc

from a4co.analytics.v1 import analytics_service_pb2 as pb
from a4co.analytics.v1 import analytics_service_pb2_grpc as pb_grpc
from a4co.type.v1 import money_pb2
from services.analytics import handlers
from services.platform.auth import current_principal
from services.platform.grpc.interceptor import MethodPolicy
from services.platform.grpc.server import Registration
from services.platform.validation import MAX_KEY, Violations

SERVICE = pb.DESCRIPTOR.services_by_name["AnalyticsService"].full_name
Context = grpc.aio.ServicerContext[Any, Any]


def check_report(request: pb.GetSalesReportRequest) -> None:
    """Both ends of the period, in order; a workshop's id if one is asked for."""
    v = Violations()
    start = v.check(request.HasField("start_time"), "start_time", "is required") and v.timestamp(
        request.start_time, "start_time"
    )
    end = v.check(request.HasField("end_time"), "end_time", "is required") and v.timestamp(
        request.end_time, "end_time"
    )
    if start and end:
        v.check(
            request.start_time.ToNanoseconds() < request.end_time.ToNanoseconds(),
            "end_time",
            "must be after start_time",
        )
    v.at_most(request.artisan_id, "artisan_id", MAX_KEY)
    v.raise_if_any()


POLICIES = {f"/{SERVICE}/GetSalesReport": MethodPolicy(validator=check_report)}


class AnalyticsServicer(pb_grpc.AnalyticsServiceServicer):
    """The AnalyticsService RPCs."""

    def __init__(self, deps: handlers.Deps) -> None:
        self.deps = deps

    async def GetSalesReport(
        self, request: pb.GetSalesReportRequest, context: Context
    ) -> pb.GetSalesReportResponse:
        """An artisan's sales over a period."""
        # Both are set and valid (check_report); the epoch itself is a valid start.
        start, end = request.start_time.ToDatetime(tzinfo=UTC), request.end_time.ToDatetime(tzinfo=UTC)
        r = await handlers.report(self.deps, current_principal(), request.artisan_id, start, end)

        def money(cents: int) -> money_pb2.Money:
            return money_pb2.Money(currency_code=r.currency_code, amount_cents=cents)

        return pb.GetSalesReportResponse(
            artisan_id=r.artisan_id,
            start_time=request.start_time,
            end_time=request.end_time,
            orders_placed=r.placed,
            orders_delivered=r.delivered,
            orders_cancelled=r.cancelled,
            units_sold=r.units,
            gross_revenue=money(r.gross_cents),
            refunded=money(r.refunded_cents),
            products=[
                pb.ProductSales(
                    product_id=p.product_id,
                    product_name=p.product_name,
                    units=p.units,
                    revenue=money(p.revenue_cents),
                )
                for p in r.products
            ],
        )


def registration(deps: handlers.Deps) -> Registration:
    """How the runtime serves analytics."""
    servicer = AnalyticsServicer(deps)
    return Registration(
        SERVICE, lambda server: pb_grpc.add_AnalyticsServiceServicer_to_server(servicer, server)
    )
