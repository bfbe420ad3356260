"""analytics' gRPC servicer."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any

import grpc

from a4co.analytics.v1 import analytics_service_pb2 as pb
from a4co.analytics.v1 import analytics_service_pb2_grpc as pb_grpc
from a4co.type.v1 import money_pb2
from services.analytics import handlers, periods
from services.platform.auth import current_principal
from services.platform.grpc.interceptor import MethodPolicy
from services.platform.grpc.server import Registration
from services.platform.validation import MAX_KEY, Violations

SERVICE = pb.DESCRIPTOR.services_by_name["AnalyticsService"].full_name
Context = grpc.aio.ServicerContext[Any, Any]


def check_report(request: pb.GetSalesReportRequest) -> None:
    """Both ends of the period, in order; a workshop's id if one is asked for."""
    v = Violations()
    _check_period(v, request)
    v.raise_if_any()


def _check_period(v: Violations, request: pb.GetSalesReportRequest | pb.GetSalesSeriesRequest) -> None:
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


INTERVALS = {
    pb.INTERVAL_DAY: periods.Interval.DAY,
    pb.INTERVAL_WEEK: periods.Interval.WEEK,
    pb.INTERVAL_MONTH: periods.Interval.MONTH,
}


def check_series(request: pb.GetSalesSeriesRequest) -> None:
    """The period as GetSalesReport's, an interval, a time zone that exists, and at most
    `MAX_BUCKETS` buckets."""
    v = Violations()
    _check_period(v, request)
    v.check(
        request.interval in INTERVALS, "interval", "must be INTERVAL_DAY, INTERVAL_WEEK or INTERVAL_MONTH"
    )
    zone = periods.time_zone(request.time_zone)
    v.check(zone is not None, "time_zone", "is not an IANA time zone, such as Europe/Madrid")
    if not v.items and zone is not None:
        try:
            _bounds(request, zone)
        except periods.TooManyBucketsError as error:
            v.add("end_time", f"the period holds {error}; choose a longer interval or a shorter period")
    v.raise_if_any()


def _period(request: pb.GetSalesReportRequest | pb.GetSalesSeriesRequest) -> tuple[datetime, datetime]:
    # Both are set and valid (checked); the epoch itself is a valid start.
    return request.start_time.ToDatetime(tzinfo=UTC), request.end_time.ToDatetime(tzinfo=UTC)


def _bounds(request: pb.GetSalesSeriesRequest, zone: tzinfo) -> list[datetime]:
    return periods.bounds(*_period(request), INTERVALS[request.interval], zone)


POLICIES = {
    f"/{SERVICE}/GetSalesReport": MethodPolicy(validator=check_report),
    f"/{SERVICE}/GetSalesSeries": MethodPolicy(validator=check_series),
}


class AnalyticsServicer(pb_grpc.AnalyticsServiceServicer):
    """The AnalyticsService RPCs."""

    def __init__(self, deps: handlers.Deps) -> None:
        self.deps = deps

    async def GetSalesReport(
        self, request: pb.GetSalesReportRequest, context: Context
    ) -> pb.GetSalesReportResponse:
        """An artisan's sales over a period."""
        r = await handlers.report(self.deps, current_principal(), request.artisan_id, *_period(request))

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

    async def GetSalesSeries(
        self, request: pb.GetSalesSeriesRequest, context: Context
    ) -> pb.GetSalesSeriesResponse:
        """An artisan's sales by day, week or month of a period."""
        zone = periods.time_zone(request.time_zone)
        assert zone is not None  # checked
        start, end = _period(request)
        artisan_id, currency, buckets = await handlers.series(
            self.deps, current_principal(), request.artisan_id, start, _bounds(request, zone), end
        )
        response = pb.GetSalesSeriesResponse(
            artisan_id=artisan_id, time_zone=request.time_zone or periods.DEFAULT_TIME_ZONE
        )
        for b in buckets:
            bucket = response.buckets.add(
                orders_placed=b.placed,
                orders_delivered=b.delivered,
                orders_cancelled=b.cancelled,
                units_sold=b.units,
            )
            bucket.start_time.FromDatetime(b.start)
            bucket.end_time.FromDatetime(b.end)
            bucket.gross_revenue.CopyFrom(money_pb2.Money(currency_code=currency, amount_cents=b.gross_cents))
            bucket.refunded.CopyFrom(money_pb2.Money(currency_code=currency, amount_cents=b.refunded_cents))
        return response


def registration(deps: handlers.Deps) -> Registration:
    """How the runtime serves analytics."""
    servicer = AnalyticsServicer(deps)
    return Registration(
        SERVICE, lambda server: pb_grpc.add_AnalyticsServiceServicer_to_server(servicer, server)
    )
