"""`a4co dlq list` and `stats` print every value whole, in a wide terminal or an 80-column one."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from a4co.orders.events.v1 import order_events_pb2
from services.cli import dlq
from services.platform.events.registry import load_registry

COLUMNS = ["seq", "when (UTC)", "event", "consumer", "reason", "deliveries", "error"]
ERROR = (
    "body is not an EventEnvelope: Error parsing message with type "
    "'a4co.events.v1.EventEnvelope': Wire format was corrupt"
)
ROWS = [
    ["25604", "2026-12-03 10:46:51", "StockReservationFailed", "notifications", "UNDECODABLE", "1", ERROR],
    ["25605", "2026-12-03 10:46:52", "unknown", "payments", "HANDLER_FAILED", "3", "KeyError: [x] [/]"],
]


def printed(width: int, monkeypatch: pytest.MonkeyPatch, rows: list[list[str]] = ROWS) -> str:
    out = io.StringIO()
    monkeypatch.setattr(dlq, "console", Console(file=out, width=width, no_color=True))
    dlq._print_rows(COLUMNS, rows)
    return out.getvalue()


@pytest.mark.parametrize("width", [80, 100, 200])
def test_no_value_is_cut_short(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    text = printed(width, monkeypatch)
    assert "…" not in text, text
    lines = text.splitlines()
    for row in ROWS:
        for value in row[:-1]:
            assert any(value in line for line in lines), (value, text)
    # the error, folded over lines, is whole once its lines are joined
    words = " ".join(re.sub(r"[│┃]", " ", text).split())
    assert "Wire format was corrupt" in words, text
    assert "KeyError: [x] [/]" in words, text  # as it is, not taken for markup


def test_a_wide_terminal_gets_a_table_and_a_narrow_one_a_row_a_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert printed(200, monkeypatch).startswith("┏")
    narrow = printed(80, monkeypatch).splitlines()
    assert narrow[0].split() == ["seq", "when", "(UTC)", "event", "consumer", "reason", "deliveries"]
    assert narrow[2].split()[:2] == ["25604", "2026-12-03"]
    assert narrow[3].startswith("    body is not an EventEnvelope"), narrow


@pytest.mark.parametrize("width", [80, 200])
def test_no_rows_are_their_columns_alone(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    text = printed(width, monkeypatch, rows=[])
    assert "seq" in text, text
    assert "error" in text, text


def test_events_are_named_and_selected_by_name_or_full_type() -> None:
    definition = load_registry().of(order_events_pb2.OrderCreated())
    assert dlq._name(definition.event_type) == "OrderCreated"
    assert dlq._name("unknown") == "unknown"
    assert dlq._filter(None, "", "OrderCreated", "").event_type == definition.event_type
    assert dlq._filter(None, "", definition.event_type, "").event_type == definition.event_type
    assert dlq._filter(None, "", "a4co.legacy.Thing", "").event_type == "a4co.legacy.Thing"


def test_times_are_shown_to_the_second_in_utc() -> None:
    assert dlq._when("2026-12-03T10:46:51.780+00:00") == "2026-12-03 10:46:51"
    assert dlq._when("2026-12-03T11:46:51.780+01:00") == "2026-12-03 10:46:51"
    assert dlq._when("") == ""
    assert dlq._when("yesterday") == "yesterday"
