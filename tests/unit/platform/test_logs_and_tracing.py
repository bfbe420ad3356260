"""JSON log lines carry service, trace and correlation ids; OTLP export follows the environment."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

from opentelemetry import trace

from services.platform.flow import Flow, flow_scope
from services.platform.logs import JsonFormatter


def record(message: str, **extra: object) -> logging.LogRecord:
    r = logging.LogRecord("a4co.test", logging.WARNING, __file__, 1, message, (), None)
    r.__dict__.update(extra)
    return r


def test_every_line_has_the_service_and_both_ids() -> None:
    formatter = JsonFormatter("orders")
    outside = json.loads(formatter.format(record("starting")))
    assert outside["service"] == "orders"
    assert (outside["trace_id"], outside["correlation_id"]) == ("", "")

    with (
        flow_scope(Flow("corr-9", "CreateOrder/1")),
        trace.get_tracer("t").start_as_current_span("s") as span,
    ):
        inside = json.loads(formatter.format(record("charged", order_id="o-1")))
    assert inside["correlation_id"] == "corr-9"
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert inside["order_id"] == "o-1"
    assert (inside["level"], inside["message"]) == ("warning", "charged")


def run_configure(env: dict[str, str]) -> str:
    code = "from services.platform.telemetry import configure_tracing; print(configure_tracing('orders'))"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.strip()


def test_otlp_export_only_when_an_endpoint_is_set() -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    assert run_configure(base) == "False"
    assert run_configure({**base, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}) == "True"
