"""JSON logs: one object per line with service, trace and correlation ids, ready for a log store."""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

from opentelemetry import trace

from services.platform.flow import _current as current_flow_var

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
# One encoder for every line: `json.dumps` with options builds a new one per call.
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)
# What that encoder writes for a string (quoted, escaped, not ASCII-only).
_STRING = json.encoder.encode_basestring


class JsonFormatter(logging.Formatter):
    """Formats a record as JSON, adding the service, the active trace and the current flow."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self._service = _STRING(service)
        self._last_second = (-1, "")  # the last second `_time` wrote, and its text (one object:
        # a thread formatting meanwhile reads both or neither)

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
            "time": self._time(created),
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

    def rpc_line(
        self,
        logger: str,
        created: float,
        method: str,
        short: str,
        code: str,
        seconds: float,
        correlation_id: str,
        user_id: str,
        error_reason: str,
        trace_id: str,
        span_id: str,
    ) -> str:
        """An access line (`access_log.py`), exactly as `line` makes it of its message and fields,
        from a template: the keys, their order and most values are known, so only the strings a
        client chose are escaped (the whole access log 5.3 to 10.0 µs a call in a loop, against
        12.1 to 20.2 through `line`; docs/performance-history.md). `trace_id` and `span_id` are
        hexadecimal or empty."""
        ms = seconds * 1000
        text = _STRING
        return (
            f'{{"time": "{self._time(created)}", "level": "info", "service": {self._service}, '
            f'"logger": {text(logger)}, "message": {text(f"rpc {short} {code} {ms:.1f} ms")}, '
            f'"trace_id": "{trace_id}", "span_id": "{span_id}", "correlation_id": {text(correlation_id)}, '
            f'"rpc_method": {text(method)}, "grpc_code": {text(code)}, "duration_ms": {round(ms, 3)!r}, '
            f'"user_id": {text(user_id)}, "error_reason": {text(error_reason)}}}'
        )

    def _time(self, created: float) -> str:
        """A record's time as `datetime.isoformat(timespec="milliseconds")` writes it in UTC
        ("2026-11-29T19:47:44.151+00:00"), rounded to the microsecond as `datetime.fromtimestamp`
        rounds it; the date and the second are made once a second."""
        if created < 0:
            return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        fraction, whole = math.modf(created)
        second, micros = int(whole), round(fraction * 1_000_000)
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        last = self._last_second
        if last[0] != second:
            last = self._last_second = (
                second,
                datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            )
        return f"{last[1]}.{micros // 1000:03d}+00:00"


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
