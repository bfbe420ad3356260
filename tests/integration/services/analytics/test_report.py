"""analytics' sales report on real servers: each figure counts the sales whose own time falls in the
period (the start included, the end not), of the artisan asked about alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest_asyncio
from google.protobuf.timestamp_pb2 import Timestamp

from a4co.analytics.v1 import analytics_service_pb2 as pb
from a4co.analytics.v1 import analytics_service_pb2_grpc as pb_grpc
from services.analytics.__main__ import build
from services.platform.auth import Role
from services.platform.local_servers import ServerUrls
from tests.integration.services.harness import Keys, RunningService, running_service, settings_for, token

SCHEMA = Path("services/analytics/schema.sql")
JANUARY = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))


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
    svc: RunningService, keys: Keys, artisan: str, start: datetime, end: datetime
) -> pb.GetSalesReportResponse:
    period = [Timestamp(), Timestamp()]
    period[0].FromDatetime(start)
    period[1].FromDatetime(end)
    request = pb.GetSalesReportRequest(start_time=period[0], end_time=period[1])
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
    assert r.units_sold == 7


async def test_a_period_without_sales_reports_zeros(analytics: RunningService, keys: Keys) -> None:
    r = await report(
        analytics, keys, "a-1", datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 2, 1, tzinfo=UTC)
    )
    assert (r.orders_placed, r.orders_delivered, r.orders_cancelled, r.units_sold) == (0, 0, 0, 0)
    assert (r.gross_revenue.amount_cents, r.refunded.amount_cents, list(r.products)) == (0, 0, [])
    assert r.gross_revenue.currency_code == "EUR"
