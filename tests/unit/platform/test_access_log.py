"""The access log keeps each call's line and hands the lines to `logging` in batches."""

from __future__ import annotations

import io
import json
import logging

import pytest

from services.platform.grpc.access_log import AccessLog
from services.platform.logs import JsonFormatter
from tests.support.waiting import eventually


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
    access.add(1_700_000_000.25, "rpc %s %s", ("CheckStock", "OK"), {"grpc_code": "OK"})
    access.add(1_700_000_001.5, "rpc %s %s", ("GetStock", "NOT_FOUND"), {"grpc_code": "NOT_FOUND"})
    assert kept(logger) == []  # not on the call's path
    await eventually(lambda: len(kept(logger)) == 2, what="the batch handed over")
    first, second = kept(logger)
    assert first.getMessage() == "rpc CheckStock OK"
    assert (first.created, first.msecs) == (1_700_000_000.25, 250.0)
    assert first.__dict__["grpc_code"] == "OK"
    assert (second.getMessage(), second.created) == ("rpc GetStock NOT_FOUND", 1_700_000_001.5)
    assert access.pending == 0


async def test_a_full_batch_is_handed_over_at_once(logger: logging.Logger) -> None:
    access = AccessLog(logger, delay_s=3600, max_pending=3)
    for i in range(3):
        access.add(float(i), "rpc %d", (i,), {})
    assert [r.getMessage() for r in kept(logger)] == ["rpc 0", "rpc 1", "rpc 2"]
    access.add(3.0, "rpc %d", (3,), {})
    assert access.pending == 1
    access.flush()  # what a stopping server does
    assert [r.getMessage() for r in kept(logger)][-1] == "rpc 3"


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


async def test_a_batch_for_the_json_stream_is_written_at_once_as_logging_would_write_it() -> None:
    stream = CountingStream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("inventory"))
    logger = logging.getLogger("a4co.test.access.json")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    access = AccessLog(logger, delay_s=3600)
    calls = [
        (1_700_000_000.25, "rpc %s %s", ("CheckStock", "OK"), {"grpc_code": "OK", "trace_id": "t-1"}),
        (1_700_000_001.5, "rpc %s", ("GetStock",), {"grpc_code": "NOT_FOUND", "user_id": "u-ñ"}),
        (1_700_000_002.0, "rpc 100% done", (), {}),
    ]
    for call in calls:
        access.add(*call)
    access.flush()

    assert stream.writes == 1
    written = [json.loads(line) for line in stream.getvalue().splitlines()]
    expected = []
    for created, msg, args, extra in calls:  # what logging makes of the same records
        record = logger.makeRecord(logger.name, logging.INFO, "", 0, msg, args, None, extra=extra)
        record.created = created
        expected.append(json.loads(handler.format(record)))
    assert written == expected
    assert written[0]["time"] == "2023-11-14T22:13:20.250+00:00"
    assert (written[0]["message"], written[0]["trace_id"], written[1]["user_id"]) == (
        "rpc CheckStock OK",
        "t-1",
        "u-ñ",
    )


async def test_a_filter_on_the_way_sends_the_lines_through_logging() -> None:
    stream = CountingStream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("inventory"))
    handler.addFilter(lambda record: record.getMessage() != "rpc dropped")
    logger = logging.getLogger("a4co.test.access.filtered")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    access = AccessLog(logger, delay_s=3600)
    access.add(1.0, "rpc kept", (), {})
    access.add(2.0, "rpc dropped", (), {})
    access.flush()
    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == ["rpc kept"]
