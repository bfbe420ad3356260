"""JSON logs: one object per line with service, trace and correlation ids, ready for a log store."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

from opentelemetry import trace

from services.platform.flow import _current as current_flow_var

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
# One encoder for every line: `json.dumps` with options builds a new one per call.
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    """Formats a record as JSON, adding the service, the active trace and the current flow."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line."""
        fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return self.line(record.created, record.levelname, record.name, record.getMessage(), fields)

    def line(
        self, created: float, level: str, logger: str, message: str, fields: Mapping[str, object]
    ) -> str:
        """One JSON line: what `format` makes of a record, from its parts (the access log makes
        its lines this way, without a LogRecord each: `access_log.py`). `fields` come last and
        win, the ids included."""
        document: dict[str, object] = {
            "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
            "level": level.lower(),
            "service": self.service,
            "logger": logger,
            "message": message,
        }
        # Every line carries both ids (empty outside a request, event or trace), so that a log
        # store can index them as fields. Ids `fields` bring (an access line's) are not looked up.
        if "trace_id" in fields and "span_id" in fields:
            document["trace_id"] = document["span_id"] = ""  # their place in the line; set below
        else:
            span = trace.get_current_span().get_span_context()
            document["trace_id"] = format(span.trace_id, "032x") if span.is_valid else ""
            document["span_id"] = format(span.span_id, "016x") if span.is_valid else ""
        flow = None if "correlation_id" in fields else current_flow_var.get()
        document["correlation_id"] = flow.correlation_id if flow is not None else ""
        document.update(fields)
        return _ENCODER.encode(document)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every log record to stderr as JSON."""
    # No record carries its thread's or process's name (no line shows them), which logging
    # would otherwise look up for every record (the logging HOWTO's "Optimization").
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
