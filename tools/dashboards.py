"""Write the Grafana dashboards (deploy/grafana/dashboards/*.json) from a compact description.

Each panel is a title, a PromQL expression per series and a unit; the layout is computed. `make
dashboards` rewrites them and `make lint` fails when they are stale; a test scrapes the running
services and fails if any expression uses a metric that no service exports.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

Panel = tuple[str, list[tuple[str, str]], str]  # title, [(legend, expr)], unit

# A stream's ending is not a failed call: it ends UNAVAILABLE when its server stops, and
# RESOURCE_EXHAUSTED or CANCELLED for its client. The server-streaming methods, from the contracts.
STREAMING = "|".join(
    sorted(
        m
        for proto in Path(__file__).parent.parent.joinpath("proto").rglob("*.proto")
        for m in re.findall(r"rpc (\w+)\([^)]*\) returns \(stream ", proto.read_text())
    )
)
# The codes of a caller's own mistakes (and a caller giving up): the rest are the service's errors.
CALLERS_CODES = "OK|CANCELLED|NOT_FOUND|INVALID_ARGUMENT|UNAUTHENTICATED|PERMISSION_DENIED|FAILED_PRECONDITION|ALREADY_EXISTS|OUT_OF_RANGE"

SYNC: list[Panel] = [
    ("p99 latency by RPC (SLA: stock 100 ms, payment 200 ms, search 150 ms, auth 100 ms, geo 200 ms)", [
        ("{{service}} {{method}}",
         "histogram_quantile(0.99, sum by (le, service, method) (rate(a4co_grpc_server_handling_seconds_bucket[5m])))"),
    ], "s"),
    ("RPC rate by code", [("{{service}} {{code}}", "sum by (service, code) (rate(a4co_grpc_server_handled_total[1m]))")], "reqps"),
    ("Error ratio of unary calls (the callers' own mistakes left out; streams' endings apart)", [
        ("{{service}}", f"sum by (service) (rate(a4co_grpc_server_handled_total{{method!~\"{STREAMING}\",code!~\"{CALLERS_CODES}\"}}[5m]))"
         f" / sum by (service) (rate(a4co_grpc_server_handled_total{{method!~\"{STREAMING}\"}}[5m]))"),
    ], "percentunit"),
    ("Circuit breakers (0 closed, 1 half-open, 2 open)", [("{{instance}} → {{peer}}", "max by (instance, peer) (a4co_circuit_breaker_state)")], "none"),
    ("Outgoing calls by result", [("{{peer}} {{code}}", "sum by (peer, code) (rate(a4co_grpc_client_calls_total[1m]))")], "reqps"),
    ("Outgoing call p99, as the caller saw it (against the peer's own handling p99)", [
        ("{{peer}} {{method}}",
         "histogram_quantile(0.99, sum by (le, peer, method) (rate(a4co_grpc_client_handling_seconds_bucket[5m])))"),
    ], "s"),
    ("CheckStock answers by source (memory, redis, miss = PostgreSQL)", [
        ("{{source}}", "sum by (source) (rate(a4co_stock_cache_lookups_total[1m]))"),
    ], "ops"),
    ("QuoteDelivery's workshop locations by source (memory, postgres)", [
        ("{{source}}", "sum by (source) (rate(a4co_geo_location_lookups_total[1m]))"),
    ], "ops"),
    ("SearchProducts by engine (index; sql while the index is not following, or near too many places)", [
        ("{{instance}} {{engine}}", "sum by (instance, engine) (rate(a4co_searches_total[1m]))"),
    ], "reqps"),
    ("Search index: following (1) and products indexed", [
        ("{{instance}} following", "max by (instance) (a4co_search_index_ready)"),
        ("{{instance}} products", "max by (instance) (a4co_search_index_documents)"),
    ], "none"),
    ("Sign-ins by result (RESOURCE_EXHAUSTED: too many attempts for an address, decision 31, or hashing busy, decision 38)", [
        ("{{code}}", "sum by (code) (rate(a4co_grpc_server_handled_total{service=\"identity\",method=\"Login\"}[5m]))"),
    ], "reqps"),
    ("Password hashing: calls waiting for a turn, and refused (HASHING_BUSY, decision 38)", [
        ("{{purpose}} waiting", "max by (purpose) (a4co_identity_hashes_waiting)"),
        ("{{purpose}} refused/s", "sum by (purpose) (rate(a4co_identity_hashes_refused_total[5m]))"),
    ], "none"),
    ("Days until the TLS certificate each service serves with expires (decisions 58, 59: as last read; alert under 14)", [
        ("{{service}}", "(min by (service) (a4co_tls_certificate_expiry_timestamp_seconds) - time()) / 86400"),
    ], "none"),
    ("Renewed TLS files read again, and rejected as not whole (decision 59), in the last hour", [
        ("{{service}} {{outcome}}", "sum by (service, outcome) (increase(a4co_tls_reloads_total[1h]))"),
    ], "none"),
    ("Calls served per coalesced round trip (decision 28: search pages, new payment methods, nearby searches)", [
        ("{{kind}}", "sum by (kind) (rate(a4co_coalesced_callers_sum[1m]))"
                     " / sum by (kind) (rate(a4co_coalesced_callers_count[1m]))"),
    ], "none"),
]  # fmt: skip
EVENTS: list[Panel] = [
    ("Dependencies down (a service serves on without NATS and Redis)", [("{{service}} {{dependency}}", "sum by (service, dependency) (1 - a4co_dependency_up)")], "none"),
    ("Service starts in the last 15 minutes (exit 69: NATS closed its connection; 70: a task it needs failed; alert ServiceRestarting at 2)", [
        ("{{instance}}", "changes(process_start_time_seconds{job=\"a4co\"}[15m])"),
    ], "none"),
    ("NATS connections lost and made again in the last 15 minutes (a cluster's server gone moves its clients)", [
        ("{{service}}", "sum by (service) (increase(a4co_nats_reconnections_total[15m]))"),
    ], "none"),
    ("Publishes and subscriptions NATS refused for the user's permissions (alert NatsPermissionDenied; decision 68)", [
        ("{{service}}", "sum by (service) (increase(a4co_nats_permission_violations_total[10m]))"),
    ], "none"),
    ("Events published", [("{{event_type}}", "sum by (event_type) (rate(a4co_events_published_total[1m]))")], "ops"),
    ("Events consumed by result", [("{{service}} {{result}}", "sum by (service, result) (rate(a4co_events_consumed_total[1m]))")], "ops"),
    ("Handler p99", [("{{service}} {{event_type}}",
                      "histogram_quantile(0.99, sum by (le, service, event_type) (rate(a4co_event_handler_duration_seconds_bucket[5m])))")], "s"),
    ("Messages per consumer batch (average)", [("{{service}} {{stream}}",
      "sum by (service, stream) (rate(a4co_consumer_batch_messages_sum[1m])) / sum by (service, stream) (rate(a4co_consumer_batch_messages_count[1m]))")], "none"),
    ("Consumer lag (pending messages)", [("{{service}} {{stream}}", "max by (service, stream) (a4co_consumer_pending_messages)")], "none"),
    ("Unacknowledged messages", [("{{service}} {{stream}}", "max by (service, stream) (a4co_consumer_unacknowledged_messages)")], "none"),
    ("Events kept while the database does not answer or refuses to write", [("{{service}} {{stream}}", "max by (service, stream) (a4co_consumer_events_held)")], "none"),
    ("Redeliveries", [("{{service}} {{event_type}}", "sum by (service, event_type) (rate(a4co_event_redeliveries_total[5m]))")], "ops"),
    ("Dead letters", [("{{service}} {{reason}}", "sum by (service, reason) (increase(a4co_dlq_messages_total[1h]))")], "none"),
    ("Outbox backlog", [("{{service}}", "max by (service) (a4co_outbox_pending)")], "none"),
    ("Oldest unpublished event", [("{{service}}", "max by (service) (a4co_outbox_oldest_age_seconds)")], "s"),
    ("Outbox publish failures", [("{{service}}", "sum by (service) (rate(a4co_outbox_publish_failures_total[5m]))")], "ops"),
    ("Notification deliveries by outcome (failed ones are tried again)", [
        ("{{outcome}}", "sum by (outcome) (rate(a4co_notification_deliveries_total[5m]))"),
    ], "ops"),
    ("Notifications waiting to be delivered again", [("waiting", "max(a4co_notifications_undelivered)")], "none"),
    ("Live notification streams (WatchNotifications): open, and messages sent a second", [
        ("{{instance}} open", "sum by (instance) (a4co_grpc_server_streams{method=\"WatchNotifications\"})"),
        ("sent/s", "sum(rate(a4co_grpc_server_stream_messages_sent_total{method=\"WatchNotifications\"}[1m]))"),
    ], "none"),
    ("Redis copies behind PostgreSQL (written again once Redis answers)", [("{{copy}}", "max by (copy) (a4co_redis_copies_stale)")], "none"),
]  # fmt: skip
SAGA: list[Panel] = [
    ("Orders in flight (saga running)", [("{{status}}", "max by (status) (a4co_orders_in_flight)")], "none"),
    ("Returns waiting for their goods: how many, and the oldest's wait in days", [
        ("waiting", "max(a4co_orders_returns_waiting)"),
        ("oldest (days)", "max(a4co_orders_oldest_return_waiting_seconds) / 86400"),
    ], "none"),
    ("Orders entering each status", [("{{status}}", "sum by (status) (rate(a4co_order_status_changes_total[1m]))")], "ops"),
    ("Orders cancelled, by reason (*_TIMEOUT: a saga step that stalls)", [
        ("{{reason}}", "sum by (reason) (increase(a4co_orders_cancelled_total[5m]))"),
    ], "none"),
    ("CreateOrder rate and p99", [
        ("rate", "sum(rate(a4co_grpc_server_handled_total{method=\"CreateOrder\"}[1m]))"),
        ("p99 (s)", "histogram_quantile(0.99, sum by (le) (rate(a4co_grpc_server_handling_seconds_bucket{method=\"CreateOrder\"}[5m])))"),
    ], "none"),
    ("Payments and refunds", [
        ("processed", "sum(rate(a4co_events_published_total{event_type=\"a4co.payments.PaymentProcessed\"}[5m]))"),
        ("failed", "sum(rate(a4co_events_published_total{event_type=\"a4co.payments.PaymentFailed\"}[5m]))"),
        ("refunds", "sum(rate(a4co_events_published_total{event_type=\"a4co.payments.RefundIssued\"}[5m]))"),
    ], "ops"),
    ("Reservations", [
        ("reserved", "sum(rate(a4co_events_published_total{event_type=\"a4co.inventory.StockReserved\"}[5m]))"),
        ("failed", "sum(rate(a4co_events_published_total{event_type=\"a4co.inventory.StockReservationFailed\"}[5m]))"),
    ], "ops"),
    ("Products of new orders by source (copy = orders' own; catalog = event not learnt yet)", [
        ("{{source}}", "sum by (source) (rate(a4co_orders_product_lookups_total[1m]))"),
    ], "ops"),
]  # fmt: skip
DASHBOARDS = {
    "a4co-sync": ("a4co — synchronous APIs and SLAs", SYNC),
    "a4co-events": ("a4co — event flow, lag, dead letters, outbox", EVENTS),
    "a4co-saga": ("a4co — orders and the saga", SAGA),
}


def dashboard(uid: str, title: str, panels: list[Panel]) -> dict[str, Any]:
    """A Grafana dashboard with two panels a row."""
    return {
        "uid": uid,
        "title": title,
        "tags": ["a4co"],
        "timezone": "utc",
        "schemaVersion": 39,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "panels": [
            {
                "id": i + 1,
                "type": "timeseries",
                "title": panel_title,
                "datasource": {"type": "prometheus", "uid": "prometheus"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {"refId": chr(65 + j), "expr": expr, "legendFormat": legend}
                    for j, (legend, expr) in enumerate(series)
                ],
            }
            for i, (panel_title, series, unit) in enumerate(panels)
        ],
    }


def expressions() -> list[str]:
    """Every PromQL expression the dashboards use."""
    return [expr for _, panels in DASHBOARDS.values() for _, series, _ in panels for _, expr in series]


def main(argv: list[str] | None = None) -> None:
    """`python -m tools.dashboards --out deploy/grafana/dashboards`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("deploy/grafana/dashboards"))
    ns = parser.parse_args(argv)
    ns.out.mkdir(parents=True, exist_ok=True)
    for uid, (title, panels) in DASHBOARDS.items():
        (ns.out / f"{uid}.json").write_text(
            json.dumps(dashboard(uid, title, panels), indent=2, ensure_ascii=False) + "\n"
        )
        print(f"wrote {ns.out / uid}.json")


if __name__ == "__main__":
    main()
