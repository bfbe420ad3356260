"""Numbers a command cannot act on are refused before it connects to anything: status 2 naming
the option (a demo with no customer raised a traceback; no concurrency waited for ever; a
negative count printed nothing)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from services.cli.main import app


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["demo", "--customers", "0"], "--customers"),
        (["demo", "--orders", "-3"], "--orders"),
        (["demo", "--concurrency", "0"], "--concurrency"),
        (["dlq", "list", "--limit", "0"], "--limit"),
        (["dlq", "replay", "--all", "--rate", "-1"], "--rate"),
        (["events", "tail", "--count", "-1"], "--count"),
        (["check", "--settled-for", "-1"], "--settled-for"),
    ],
)
def test_a_number_out_of_range_is_refused_naming_the_option(args: list[str], option: str) -> None:
    result = CliRunner().invoke(app, args, env={"A4CO_NATS_URL": "nats://127.0.0.1:1", "COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output
