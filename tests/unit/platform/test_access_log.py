"""The access log keeps each call's line and hands the lines to `logging` in batches."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry.trace import INVALID_SPAN_CONTEXT, SpanContext, TraceFlags

from services.platform.grpc.access_log import MESSAGE, AccessLog, Call, arguments, fields
from services.platform.logs import JsonFormatter
from tests.support.waiting import eventually

TRACED = SpanContext(
    trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0x00F067AA0BA902B7, is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
)  # fmt: skip


def call(
    created: float,
    method: str = "CheckStock",
    code: str = "OK",
    *,
    seconds: float = 0.0031,
    correlation_id: str = "c-1",
    user_id: str = "",
    error_reason: str = "",
    span: SpanContext = INVALID_SPAN_CONTEXT,
) -> Call:
    """A call's line as the platform layer keeps it."""
    full = f"/a4co.inventory.v1.InventoryService/{method}"
    return (created, full, method, code, seconds, correlation_id, user_id, error_reason, span)


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logger() -> logging.Logger:
    logger = logging.getLogger("a4co.test.access")
    logger.handlers[:] = [Kept()]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def kept(logger: logging.Logger) -> list[logging.LogRecord]:
    handler = logger.handlers[0]
    assert isinstance(handler, Kept)
    return handler.records


async def test_lines_reach_the_log_after_the_delay_with_their_calls_time(logger: logging.Logger) -> None:
    access = AccessLog(logger, delay_s=0.05)
    access.add(call(1_700_000_000.25, span=TRACED))
    access.add(call(1_700_000_001.5, "GetStock", "NOT_FOUND", error_reason="PRODUCT_NOT_FOUND"))
    assert kept(logger) == []  # not on the call's path
    await eventually(lambda: len(kept(logger)) == 2, what="the batch handed over")
    first, second = kept(logger)
    assert first.getMessage() == "rpc CheckStock OK 3.1 ms"
    assert (first.created, first.msecs) == (1_700_000_000.25, 250.0)
    assert {k: first.__dict__[k] for k in ("rpc_method", "grpc_code", "duration_ms", "correlation_id")} == {
        "rpc_method": "/a4co.inventory.v1.InventoryService/CheckStock",
        "grpc_code": "OK",
        "duration_ms": 3.1,
        "correlation_id": "c-1",
    }
    assert (first.__dict__["trace_id"], first.__dict__["span_id"]) == (
        "0af7651916cd43dd8448eb211c80319c",
        "00f067aa0ba902b7",
    )
    assert (second.getMessage(), second.created) == ("rpc GetStock NOT_FOUND 3.1 ms", 1_700_000_001.5)
    assert (second.__dict__["error_reason"], second.__dict__["trace_id"]) == ("PRODUCT_NOT_FOUND", "")
    assert access.pending == 0


async def test_a_full_batch_is_handed_over_at_once(logger: logging.Logger) -> None:
    access = AccessLog(logger, delay_s=3600, max_pending=3)
    for i in range(3):
        access.add(call(float(i), f"M{i}"))
    assert [r.getMessage() for r in kept(logger)] == [f"rpc M{i} OK 3.1 ms" for i in range(3)]
    access.add(call(3.0, "M3"))
    assert access.pending == 1
    access.flush()  # what a stopping server does
    assert [r.getMessage() for r in kept(logger)][-1] == "rpc M3 OK 3.1 ms"


def test_it_is_off_when_the_logger_drops_info(logger: logging.Logger) -> None:
    logger.setLevel(logging.WARNING)
    assert not AccessLog(logger).enabled
    logger.setLevel(logging.INFO)
    assert AccessLog(logger).enabled


class CountingStream(io.StringIO):
    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


async def test_a_batch_for_the_json_stream_is_written_at_once_exactly_as_logging_would_write_it() -> None:
    stream = CountingStream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("inventory"))
    logger = logging.getLogger("a4co.test.access.json")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    access = AccessLog(logger, delay_s=3600)
    calls = [
        call(1_700_000_000.25, span=TRACED),
        call(1_700_000_001.9999996, "GetStock", "NOT_FOUND", user_id="u-ñ", error_reason="PRODUCT_NOT_FOUND"),
        call(1_700_000_002.0, seconds=12.34567891, correlation_id='c "quoted" \\ and\ta tab'),
        call(1_700_000_002.0004, "Reserve", "UNAVAILABLE", seconds=0.0),
    ]
    for one in calls:
        access.add(one)
    access.flush()

    assert stream.writes == 1
    written = stream.getvalue().splitlines()
    expected = []
    for one in calls:  # what the JSON formatter makes of the records logging's path makes
        record = logger.makeRecord(
            logger.name, logging.INFO, "", 0, MESSAGE, arguments(one), None, extra=fields(one)
        )
        record.created = one[0]
        expected.append(handler.format(record))
    assert written == expected
    parsed = [json.loads(line) for line in written]
    assert parsed[0]["time"] == "2023-11-14T22:13:20.250+00:00"
    assert parsed[1]["time"] == "2023-11-14T22:13:22.000+00:00"  # rounded to the µs, as datetime does
    assert (parsed[0]["message"], parsed[0]["trace_id"], parsed[1]["user_id"]) == (
        "rpc CheckStock OK 3.1 ms",
        "0af7651916cd43dd8448eb211c80319c",
        "u-ñ",
    )
    assert (parsed[2]["duration_ms"], parsed[2]["correlation_id"]) == (12345.679, 'c "quoted" \\ and\ta tab')


async def test_a_filter_on_the_way_sends_the_lines_through_logging() -> None:
    stream = CountingStream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("inventory"))
    handler.addFilter(lambda record: "Dropped" not in record.getMessage())
    logger = logging.getLogger("a4co.test.access.filtered")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    access = AccessLog(logger, delay_s=3600)
    access.add(call(1.0, "Kept"))
    access.add(call(2.0, "Dropped"))
    access.flush()
    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == ["rpc Kept OK 3.1 ms"]
