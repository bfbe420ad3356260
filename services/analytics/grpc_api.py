"""analytics' gRPC servicer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc

from a4co.analytics.v1 import analytics_service_pb2 as pb
from a4co.analytics.v1 import analytics_service_pb2_grpc as pb_grpc
from a4co.type.v1 import money_pb2
from services.analytics import handlers, periods
from services.platform.auth import current_principal
from services.platform.errors import FieldViolation, InvalidArgumentError
from services.platform.grpc.interceptor import MethodPolicy
from services.platform.grpc.server import Registration
from services.platform.timestamps import set_timestamp
from services.platform.validation import MAX_KEY, Violations

SERVICE = pb.DESCRIPTOR.services_by_name["AnalyticsService"].full_name
Context = grpc.aio.ServicerContext[Any, Any]


MAX_PRODUCTS = 1000  # products a report lists at the most
DEFAULT_PRODUCTS = 100


def check_report(request: pb.GetSalesReportRequest) -> None:
    """Both ends of the period, in order; a workshop's id if one is asked for; how many products
    to list, up to MAX_PRODUCTS."""
    v = Violations()
    _check_period(v, request)
    v.between(request.max_products, "max_products", 0, MAX_PRODUCTS)
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
    """The period as GetSalesReport's, an interval and a time zone that exists (the number of
    buckets is checked as they are made, by the servicer)."""
    v = Violations()
    _check_period(v, request)
    v.check(
        request.interval in INTERVALS, "interval", "must be INTERVAL_DAY, INTERVAL_WEEK or INTERVAL_MONTH"
    )
    v.check(
        periods.time_zone(request.time_zone) is not None,
        "time_zone",
        "is not an IANA time zone, such as Europe/Madrid",
    )
    v.raise_if_any()


def _period(request: pb.GetSalesReportRequest | pb.GetSalesSeriesRequest) -> tuple[datetime, datetime]:
    # Both are set and valid (checked); the epoch itself is a valid start.
    return request.start_time.ToDatetime(tzinfo=UTC), request.end_time.ToDatetime(tzinfo=UTC)


def _bounds(request: pb.GetSalesSeriesRequest) -> tuple[list[datetime], datetime]:
    """The lower bounds of a checked request's buckets, and the period's end; INVALID_ARGUMENT
    naming end_time for more than `periods.MAX_BUCKETS`."""
    zone = periods.time_zone(request.time_zone)
    assert zone is not None  # checked
    start, end = _period(request)
    try:
        return periods.bounds(start, end, INTERVALS[request.interval], zone), end
    except periods.TooManyBucketsError as error:
        message = f"the period holds {error}; choose a longer interval or a shorter period"
        raise InvalidArgumentError([FieldViolation("end_time", message)]) from None


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
        r = await handlers.report(
            self.deps,
            current_principal(),
            request.artisan_id,
            *_period(request),
            max_products=request.max_products or DEFAULT_PRODUCTS,
        )

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
            unlisted_products=r.unlisted_products,
            orders_returned=r.returned,
        )

    async def GetSalesSeries(
        self, request: pb.GetSalesSeriesRequest, context: Context
    ) -> pb.GetSalesSeriesResponse:
        """An artisan's sales by day, week or month of a period."""
        lows, end = _bounds(request)
        artisan_id, currency, buckets = await handlers.series(
            self.deps, current_principal(), request.artisan_id, lows, end
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
                orders_returned=b.returned,
            )
            set_timestamp(bucket.start_time, b.start)
            set_timestamp(bucket.end_time, b.end)
            for money, cents in ((bucket.gross_revenue, b.gross_cents), (bucket.refunded, b.refunded_cents)):
                money.currency_code, money.amount_cents = currency, cents
        return response


def registration(deps: handlers.Deps) -> Registration:
    """How the runtime serves analytics."""
    servicer = AnalyticsServicer(deps)
    return Registration(
        SERVICE, lambda server: pb_grpc.add_AnalyticsServiceServicer_to_server(servicer, server)
    )
