"""What a logger said in a test, as (level, message) pairs."""

from __future__ import annotations

import logging

import pytest


def said(
    caplog: pytest.LogCaptureFixture, logger: str, at_least: int = logging.INFO
) -> list[tuple[int, str]]:
    """What `logger` logged at `at_least` or above (the test sets caplog's level for it)."""
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == logger and r.levelno >= at_least]
