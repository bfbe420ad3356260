"""What `make run` prints of a service's log line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from services.launcher.__main__ import TerminalLog, show

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "services/platform/events/consumer.py", line 681, in _after_commit\n'
    "    await callback()\n"
    "redis.exceptions.OutOfMemoryError: command not allowed when used memory > 'maxmemory'.\n"
)


def test_a_json_line_is_shown_as_its_level_and_message() -> None:
    line = json.dumps({"level": "info", "message": "ready", "service": "geo", "trace_id": ""})
    assert show({}, "geo", line) == "          geo | info ready"


def test_an_exception_is_shown_by_its_last_line_and_where_its_traceback_is() -> None:
    line = json.dumps({"level": "error", "message": "after-commit callback failed", "exception": TRACEBACK})
    shown = show({}, "inventory", line, Path(".data/run"))
    assert shown == (
        "    inventory | error after-commit callback failed (redis.exceptions.OutOfMemoryError: command"
        " not allowed when used memory > 'maxmemory'.; traceback in .data/run/inventory.log)"
    )


def test_lines_that_are_not_json_objects_are_shown_as_they_are() -> None:
    for line in ("plain text from a library", "42", '["a", "list"]', "{not json"):
        assert show({}, "cms", line) == f"          cms | {line}"


def test_the_launchers_own_warnings_are_said_from_launcher_and_nothing_below() -> None:
    """Not bare between the prefixed lines, as Python prints a warning nobody handles."""
    said: list[tuple[str, str]] = []
    handler = TerminalLog(lambda source, line: said.append((source, line)))
    logger = logging.getLogger("tests.launcher.terminal")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)  # the handler, not the logger, leaves the INFO out
    try:
        logger.warning("%s runs at the same CPU priority as the other services", "analytics")
        logger.info("nats ready on port 4222")
    finally:
        logger.removeHandler(handler)
    assert said == [("launcher", "warning analytics runs at the same CPU priority as the other services")]
    assert (
        show({}, *said[0])
        == "     launcher | warning analytics runs at the same CPU priority as the other services"
    )
