"""Tracing set-up: OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set, nothing otherwise."""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def configure_tracing(service: str) -> bool:
    """Install a tracer provider that exports to the OTLP endpoint; False when none is set."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return False
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": f"a4co-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True


def tracing_enabled() -> bool:
    """Whether a tracer provider is installed (by `configure_tracing` or a test); without one,
    spans are no-ops and the platform skips building them."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
