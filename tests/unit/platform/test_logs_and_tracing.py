"""JSON log lines carry service, trace and correlation ids; OTLP export follows the environment."""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
from datetime import UTC, datetime

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


def test_a_lines_time_is_the_records_in_utc_to_the_millisecond_as_datetime_writes_it() -> None:
    """The date and second are made once a second; the milliseconds follow datetime's rounding
    to the microsecond, at and around every boundary."""
    formatter = JsonFormatter("orders")
    rng = random.Random(7)
    moments = [rng.uniform(0, 4e9) for _ in range(5_000)] + [
        1_700_000_000 + k / 1000 + nudge
        for k in range(1_000)
        for nudge in (0.0, 4.9e-7, 5e-7, -5e-7, 9.995e-4)
    ]
    for moment in [*moments, 0.0, -1.5]:
        made = logging.LogRecord("a4co.test", logging.INFO, __file__, 1, "m", (), None)
        made.created = moment
        expected = datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")
        assert json.loads(formatter.format(made))["time"] == expected, moment


# Which tracing modules a service process has loaded once its servers and channels exist.
LOADED = """
import asyncio, sys
from services.platform.telemetry import configure_tracing
enabled = configure_tracing('orders')
from services.platform.grpc.client import open_channel
from services.platform.grpc.interceptor import PlatformInterceptor
from services.platform.grpc.server import GrpcServer
async def main():
    interceptor = PlatformInterceptor(service='orders', domain='a4co.es', policies={}, verifier=None)
    GrpcServer([], interceptor)
    await open_channel('127.0.0.1:1').close()
asyncio.run(main())
print(enabled, sorted({m for m in sys.modules if m in TRACING}))
"""
TRACING = ("opentelemetry.sdk.trace", "opentelemetry.instrumentation.grpc")


CONFIGURE = "from services.platform.telemetry import configure_tracing; print(configure_tracing('orders'))"


def run_configure(env: dict[str, str], code: str = CONFIGURE) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.strip()


def test_otlp_export_only_when_an_endpoint_is_set() -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    assert run_configure(base) == "False"
    assert run_configure({**base, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}) == "True"


def test_the_tracing_sdk_and_instrumentation_load_only_with_tracing_on() -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    code = f"TRACING = {TRACING!r}\n{LOADED}"
    assert run_configure(base, code) == "False []"
    on = run_configure({**base, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, code)
    assert on == f"True {sorted(TRACING)}"
