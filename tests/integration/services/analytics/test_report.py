"""analytics' sales report on real servers: each figure counts the sales whose own time falls in the
period (the start included, the end not), of the artisan asked about alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
import pytest_asyncio
from google.protobuf.timestamp_pb2 import Timestamp

from a4co.analytics.v1 import analytics_service_pb2 as pb
from a4co.analytics.v1 import analytics_service_pb2_grpc as pb_grpc
from services.analytics.__main__ import build
from services.platform.auth import Role
from services.platform.grpc.status import details_of
from services.platform.local_servers import ServerUrls
from tests.integration.services.harness import Keys, RunningService, running_service, settings_for, token
from tests.integration.services.test_grpcurl import call

SCHEMA = Path("services/analytics/schema.sql")
JANUARY = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
MADRID = ZoneInfo("Europe/Madrid")


def at(month: int, day: int, hour: int = 12, minute: int = 0) -> datetime:
    year = 2025 if month == 12 else 2026
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# order, artisan, subtotal, placed, delivered, cancelled, refunded, lines (product, units, cents)
SALES = [
    ("o-jan", "a-1", 2500, at(1, 5), at(1, 7), None, 0, [("p-jarra", 2, 2000), ("p-cuenco", 1, 500)]),
    ("o-late", "a-1", 900, at(1, 31, 23, 59), at(2, 2), None, 0, [("p-jarra", 1, 900)]),
    ("o-early", "a-1", 1500, at(12, 30), at(1, 2), None, 0, [("p-cuenco", 3, 1500)]),
    ("o-cancelled", "a-1", 800, at(1, 10), None, at(1, 11), 800, [("p-jarra", 1, 800)]),
    ("o-cancelled-after", "a-1", 700, at(12, 20), None, at(2, 1, 0), 700, [("p-cuenco", 1, 700)]),
    ("o-first-instant", "a-1", 100, at(12, 29), at(1, 1, 0), None, 0, [("p-plato", 1, 100)]),
    ("o-other", "a-2", 9999, at(1, 6), at(1, 8), at(1, 9), 50, [("p-aceite", 9, 9999)]),
]


@pytest_asyncio.fixture
async def analytics(urls: ServerUrls, prefix: str, keys: Keys) -> AsyncIterator[RunningService]:
    async with running_service(
        "analytics", build, SCHEMA, settings_for("analytics", urls, prefix, keys)
    ) as svc:
        pool = svc.infra.pool
        await pool.executemany(
            "INSERT INTO sales (order_id, artisan_id, subtotal_cents, total_cents, placed_at, delivered_at,"
            " cancelled_at, refunded_cents) VALUES ($1, $2, $3, $3, $4, $5, $6, $7)",
            [s[:7] for s in SALES],
        )
        await pool.executemany(
            "INSERT INTO sale_lines (order_id, product_id, product_name, quantity, revenue_cents)"
            " VALUES ($1, $2, $2, $3, $4)",
            [(s[0], *line) for s in SALES for line in s[7]],
        )
        yield svc


async def report(
    svc: RunningService, keys: Keys, artisan: str, start: datetime, end: datetime, max_products: int = 0
) -> pb.GetSalesReportResponse:
    period = [Timestamp(), Timestamp()]
    period[0].FromDatetime(start)
    period[1].FromDatetime(end)
    request = pb.GetSalesReportRequest(start_time=period[0], end_time=period[1], max_products=max_products)
    stub = pb_grpc.AnalyticsServiceStub(svc.channel)
    return await stub.GetSalesReport(request, metadata=token(keys, artisan, Role.ARTISAN))


async def test_a_report_counts_each_sale_by_its_own_time_within_the_period(
    analytics: RunningService, keys: Keys
) -> None:
    r = await report(analytics, keys, "a-1", *JANUARY)
    # Placed: o-jan, o-late, o-cancelled. Delivered: o-jan, o-early, o-first-instant (at the start
    # itself). Cancelled: o-cancelled (o-cancelled-after, at the end itself, is not in January).
    assert (r.orders_placed, r.orders_delivered, r.orders_cancelled) == (3, 3, 1)
    assert (r.gross_revenue.amount_cents, r.refunded.amount_cents) == (2500 + 1500 + 100, 800)
    assert r.gross_revenue.currency_code == "EUR"
    # The delivered orders' lines, best-selling first.
    lines = [(p.product_id, p.units, p.revenue.amount_cents) for p in r.products]
    assert lines == [("p-cuenco", 4, 2000), ("p-jarra", 2, 2000), ("p-plato", 1, 100)]
    assert (r.units_sold, r.unlisted_products) == (7, 0)


async def test_a_report_lists_its_best_selling_products_and_counts_them_all(
    analytics: RunningService, keys: Keys
) -> None:
    top = await report(analytics, keys, "a-1", *JANUARY, max_products=2)
    assert [(p.product_id, p.units) for p in top.products] == [("p-cuenco", 4), ("p-jarra", 2)]
    assert (top.unlisted_products, top.units_sold, top.gross_revenue.amount_cents) == (1, 7, 4100)
    one = await report(analytics, keys, "a-1", *JANUARY, max_products=1)
    assert ([p.product_id for p in one.products], one.unlisted_products) == (["p-cuenco"], 2)
    stub = pb_grpc.AnalyticsServiceStub(analytics.channel)
    for bad in (-1, 1001):
        request = pb.GetSalesReportRequest(max_products=bad)
        request.start_time.FromDatetime(JANUARY[0])
        request.end_time.FromDatetime(JANUARY[1])
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetSalesReport(request, metadata=token(keys, "a-1", Role.ARTISAN))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in details_of(refused.value)[1]] == ["max_products"]


async def test_a_period_without_sales_reports_zeros(analytics: RunningService, keys: Keys) -> None:
    r = await report(
        analytics, keys, "a-1", datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 2, 1, tzinfo=UTC)
    )
    assert (r.orders_placed, r.orders_delivered, r.orders_cancelled, r.units_sold) == (0, 0, 0, 0)
    assert (r.gross_revenue.amount_cents, r.refunded.amount_cents, list(r.products)) == (0, 0, [])
    assert r.gross_revenue.currency_code == "EUR"


async def series(
    svc: RunningService,
    keys: Keys,
    artisan: str,
    start: datetime,
    end: datetime,
    interval: pb.Interval.ValueType,
    time_zone: str = "",
    caller: str = "",
) -> pb.GetSalesSeriesResponse:
    request = pb.GetSalesSeriesRequest(interval=interval, time_zone=time_zone, artisan_id=artisan)
    request.start_time.FromDatetime(start)
    request.end_time.FromDatetime(end)
    stub = pb_grpc.AnalyticsServiceStub(svc.channel)
    return await stub.GetSalesSeries(request, metadata=token(keys, caller or artisan, Role.ARTISAN))


def figures(b: pb.SalesBucket) -> tuple[int, ...]:
    return (
        b.orders_placed,
        b.orders_delivered,
        b.orders_cancelled,
        b.units_sold,
        b.gross_revenue.amount_cents,
        b.refunded.amount_cents,
    )


async def test_a_series_divides_the_period_by_local_days_and_adds_up_to_the_report(
    analytics: RunningService, keys: Keys
) -> None:
    daily = await series(analytics, keys, "a-1", *JANUARY, pb.INTERVAL_DAY)
    assert (daily.artisan_id, daily.time_zone) == ("a-1", "Europe/Madrid")
    # Madrid's days: the 1st from the period's start (01:00 there), then each from 23:00 UTC; the
    # last bucket ends with the period, an hour into Madrid's 1 February.
    starts = [b.start_time.ToDatetime(tzinfo=UTC) for b in daily.buckets]
    assert (len(starts), starts[0], starts[1]) == (32, JANUARY[0], datetime(2026, 1, 1, 23, tzinfo=UTC))
    assert daily.buckets[-1].end_time.ToDatetime(tzinfo=UTC) == JANUARY[1]
    assert all(
        b.end_time == after.start_time for b, after in zip(daily.buckets, daily.buckets[1:], strict=False)
    )
    r = await report(analytics, keys, "a-1", *JANUARY)
    whole = (
        r.orders_placed,
        r.orders_delivered,
        r.orders_cancelled,
        r.units_sold,
        r.gross_revenue.amount_cents,
        r.refunded.amount_cents,
    )
    assert tuple(map(sum, zip(*(figures(b) for b in daily.buckets), strict=True))) == whole
    # o-jan placed on the 5th at 12:00 UTC, delivered on the 7th; o-late placed at 23:59 UTC on
    # the 31st, which is Madrid's 1 February: the last bucket, not the 31st.
    by_day = {b.start_time.ToDatetime(tzinfo=UTC).astimezone(MADRID).day: figures(b) for b in daily.buckets}
    assert by_day[5][0] == 1
    assert by_day[7][1:5] == (1, 0, 3, 2500)
    assert daily.buckets[-1].orders_placed == 1
    assert daily.buckets[-2].orders_placed == 0
    assert daily.buckets[-1].gross_revenue.currency_code == "EUR"
    in_utc = await series(analytics, keys, "a-1", *JANUARY, pb.INTERVAL_DAY, time_zone="UTC")
    assert (len(in_utc.buckets), in_utc.buckets[-1].orders_placed) == (31, 1), "the 31st, in UTC"


async def test_weeks_and_months_and_an_empty_period(analytics: RunningService, keys: Keys) -> None:
    winter = (datetime(2025, 12, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))
    monthly = await series(analytics, keys, "a-1", *winter, pb.INTERVAL_MONTH, time_zone="UTC")
    assert [figures(b)[:3] for b in monthly.buckets] == [(3, 0, 0), (3, 3, 1), (0, 1, 1)]
    weekly = await series(analytics, keys, "a-1", *JANUARY, pb.INTERVAL_WEEK)
    assert [b.start_time.ToDatetime(tzinfo=UTC).astimezone(MADRID).weekday() for b in weekly.buckets[1:]] == [
        0
    ] * 4
    empty = await series(analytics, keys, "a-9", *JANUARY, pb.INTERVAL_WEEK)
    assert len(empty.buckets) == 5
    assert not any(any(figures(b)) for b in empty.buckets)


async def test_a_series_is_refused_naming_each_bad_field(analytics: RunningService, keys: Keys) -> None:
    async def refused(**changes: Any) -> list[tuple[str, str]]:
        args: dict[str, Any] = {"start": JANUARY[0], "end": JANUARY[1], "interval": pb.INTERVAL_DAY} | changes
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await series(
                analytics, keys, "a-1", args["start"], args["end"], args["interval"], args.get("zone", "")
            )
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        return details_of(error.value)[1]

    assert await refused(interval=pb.INTERVAL_UNSPECIFIED) == [
        ("interval", "must be INTERVAL_DAY, INTERVAL_WEEK or INTERVAL_MONTH")
    ]
    assert await refused(zone="Europe/Jaen") == [
        ("time_zone", "is not an IANA time zone, such as Europe/Madrid")
    ]
    assert await refused(end=datetime(2027, 3, 1, tzinfo=UTC)) == [
        ("end_time", "the period holds more than 400 days; choose a longer interval or a shorter period")
    ]
    months = await series(
        analytics, keys, "a-1", JANUARY[0], datetime(2027, 3, 1, tzinfo=UTC), pb.INTERVAL_MONTH
    )
    assert len(months.buckets) == 15, "the same period by month"
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await series(analytics, keys, "a-1", *JANUARY, pb.INTERVAL_DAY, caller="a-2")
    assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_readmes_commands(analytics: RunningService, keys: Keys) -> None:
    """The README's two commands, on January (its offsets are Madrid's in winter)."""
    bearer = dict(token(keys, "a-1", Role.ARTISAN))["authorization"].removeprefix("Bearer ")
    period: dict[str, object] = {
        "start_time": "2026-01-01T00:00:00+01:00",
        "end_time": "2026-02-01T00:00:00+01:00",
    }
    service = "a4co.analytics.v1.AnalyticsService"
    whole = await call(analytics.address, f"{service}/GetSalesReport", period, token=bearer)
    weekly = await call(
        analytics.address, f"{service}/GetSalesSeries", period | {"interval": "INTERVAL_WEEK"}, token=bearer
    )
    buckets: list[dict[str, Any]] = weekly["buckets"]  # type: ignore[assignment]
    assert [b["start_time"] for b in buckets] == [
        "2025-12-31T23:00:00Z",  # the period's start, a Thursday
        "2026-01-04T23:00:00Z",  # Monday the 5th in Madrid
        "2026-01-11T23:00:00Z",
        "2026-01-18T23:00:00Z",
        "2026-01-25T23:00:00Z",
    ]
    assert sum(int(b.get("orders_placed", 0)) for b in buckets) == int(whole["orders_placed"])  # type: ignore[call-overload]
    assert weekly["time_zone"] == "Europe/Madrid"
