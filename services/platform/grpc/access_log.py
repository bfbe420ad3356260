"""The access log: one line per call, handed to `logging` in batches, off the call's path.

Made inside each call, a line cost the inventory process about 120 µs of CPU per CheckStock at
16 in flight, about 40 in batches (docs/performance-history.md), although making one costs about 16 µs in
a loop: interleaved with gRPC's own work on every call, Python's logging and JSON code runs
several times slower.
A call now only keeps what its line needs (a tuple, `Call`). The lines wait at most `delay_s`, or
until `max_pending` have gathered, and are then made and handled one after another. Each record
keeps the time its call ended, so a line's `time` is the call's, not the batch's.

When the lines go to one JSON stream handler, as `configure_logging` sets it up, a batch's lines
are made by the handler's formatter without a LogRecord each (`JsonFormatter.rpc_line`, from a
template) and written with one call. Any other set-up (another handler, a filter) gets records
through `logging`, each line the same. Measured (docs/performance-history.md): without a LogRecord,
13.3 → 6.0 µs a line in a loop, 257 and 255 → 245 and 244 µs of inventory's CPU per CheckStock at
16 in flight; from the template, the access log's share of the platform layer 12.1 to 20.2 → 5.3
to 10.0 µs a call in a loop, and at 16 in flight 37 µs less of inventory's CPU per CheckStock and
34 less of identity's per ValidateToken (means of 30 alternated rounds).

What is lost: a process killed without a chance to stop loses the lines of its last `delay_s`.
A stopping server hands over what is pending (`GrpcServer.stop`). A call's access line may
follow the other lines the call logged, by up to `delay_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from opentelemetry.trace import SpanContext

from services.platform.logs import JsonFormatter

DELAY_S = 0.1
# A batch holds the event loop while its lines are made, about 15 µs each when this was chosen
# (about 6 since they are made without a LogRecord): 64 lines were about 1 ms. Batches of up to
# 512 (300 lines every 0.1 s at 3,000 calls/s) raised CheckStock's p99 at 16 in flight by 0.5 to
# 1 ms (12.5 to 12.7 ms against 11.4 to 12.0 with 64, three runs of each).
MAX_PENDING = 64

# One call's line, as kept until its batch is written: when the call ended (`time.time()`), its
# method ("/package.Service/Method") and the method's own name, its status code's name, how long
# it took (s), its correlation id, the caller's user id and the error's reason ("" for none), and
# the span context current at the call, whose ids the line carries.
Call = tuple[float, str, str, str, float, str, str, str, SpanContext]
MESSAGE = "rpc %s %s %.1f ms"  # the method's name, the code and the duration


def fields(call: Call) -> dict[str, object]:
    """A call's line as a record's extra fields (the message is `MESSAGE` with `arguments`)."""
    _, method, _, code, seconds, correlation_id, user_id, error_reason, span = call
    trace_id, span_id = _ids(span)
    return {
        "rpc_method": method,
        "grpc_code": code,
        "duration_ms": round(seconds * 1000, 3),
        "correlation_id": correlation_id,
        "user_id": user_id,
        "error_reason": error_reason,
        "trace_id": trace_id,
        "span_id": span_id,
    }


def arguments(call: Call) -> tuple[str, str, float]:
    """The arguments of a call's `MESSAGE`."""
    return call[2], call[3], call[4] * 1000


def _ids(span: SpanContext) -> tuple[str, str]:
    if not span.is_valid:
        return "", ""
    return format(span.trace_id, "032x"), format(span.span_id, "016x")


class AccessLog:
    """Keeps a call's line until the batch it belongs to is handed to `logger`."""

    def __init__(
        self, logger: logging.Logger, *, delay_s: float = DELAY_S, max_pending: int = MAX_PENDING
    ) -> None:
        self.logger = logger
        self.delay_s = delay_s
        self.max_pending = max_pending
        self._pending: list[Call] = []
        self._timer: asyncio.TimerHandle | None = None

    @property
    def enabled(self) -> bool:
        """Whether lines are wanted at all (the logger's level lets INFO through)."""
        return self.logger.isEnabledFor(logging.INFO)

    @property
    def pending(self) -> int:
        """Lines kept and not yet handed over."""
        return len(self._pending)

    def add(self, call: Call) -> None:
        """Keep one call's line."""
        self._pending.append(call)
        if len(self._pending) >= self.max_pending:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay_s, self.flush)

    def flush(self) -> None:
        """Hand every pending line to the logger now, oldest first."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        if not pending:
            return
        target = _one_json_stream(self.logger)
        if target is not None:
            handler, formatter = target
            name = self.logger.name
            text = "".join([formatter.rpc_line(name, *call[:8], *_ids(call[8])) + "\n" for call in pending])
            with handler.lock or contextlib.nullcontext():
                try:
                    handler.stream.write(text)
                    handler.flush()
                    return
                except Exception:  # noqa: S110 (written record by record below, with logging's handling)
                    pass
        for call in pending:
            created = call[0]
            record = self.logger.makeRecord(
                self.logger.name, logging.INFO, "", 0, MESSAGE, arguments(call), None, extra=fields(call)
            )
            record.created = created
            record.msecs = (created - int(created)) * 1000
            self.logger.handle(record)


def _one_json_stream(logger: logging.Logger) -> tuple[logging.StreamHandler[Any], JsonFormatter] | None:
    """The one handler `logger`'s INFO records reach, when it is a plain stream handler with the
    JSON formatter and no filter is on their way (as `configure_logging` sets it up): the lines
    of a batch are then made without a LogRecord each and written with one call, at about half
    the cost (docs/performance-history.md). Any other set-up gets the records through `logging`."""
    handlers: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters or current.disabled:
            return None
        handlers += current.handlers
        if not current.propagate:
            break
        current = current.parent
    if len(handlers) != 1:
        return None
    (handler,) = handlers
    formatter = handler.formatter
    if type(handler) is not logging.StreamHandler or handler.filters or handler.level > logging.INFO:
        return None
    if not isinstance(formatter, JsonFormatter):
        return None
    return handler, formatter
