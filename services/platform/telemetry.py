"""Tracing set-up: OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set, nothing otherwise.

The SDK, the exporter and the gRPC instrumentation are imported only when tracing is on
(`configure_tracing`, `server_interceptors`, `client_interceptors`): without it they would only
take memory, about 2 MB in each service process (importing the catalog's modules: 71.4 MB RSS
with them, 69.3 without; docs/performance-history.md).
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import trace


def configure_tracing(service: str) -> bool:
    """Install a tracer provider that exports to the OTLP endpoint; False when none is set."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return False
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"a4co-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True


def tracing_enabled() -> bool:
    """Whether a tracer provider is installed (by `configure_tracing` or a test); without one,
    spans are no-ops and the platform skips building them."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def server_interceptors() -> list[Any] | None:
    """OpenTelemetry's gRPC server interceptor while tracing is on; None otherwise."""
    if not tracing_enabled():
        return None
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]


def client_interceptors() -> list[Any] | None:
    """OpenTelemetry's gRPC client interceptors while tracing is on; None otherwise."""
    if not tracing_enabled():
        return None
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())
