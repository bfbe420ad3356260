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


@pytest.mark.parametrize(
    "args",
    [
        ["nats-permissions"],
        ["status"],
        ["check"],
        ["trace", "o-1"],
        ["dlq", "list"],
        ["events", "tail"],
    ],
)
@pytest.mark.parametrize("prefix", ["Bad-Prefix", "a.b", 'x";drop', "staging\n", "1st"])
def test_a_prefix_the_services_would_refuse_is_refused(args: list[str], prefix: str) -> None:
    """Given as --prefix or as A4CO_PREFIX: it would name streams, subjects and schemas of no
    deployment (and, quoted into SQL or a NATS subject, something else)."""
    env = {"A4CO_NATS_URL": "nats://127.0.0.1:1", "A4CO_DATABASE_URL": "postgresql://x@127.0.0.1:1/x"}
    for given, extra in ((["--prefix", prefix], {}), ([], {"A4CO_PREFIX": prefix})):
        result = CliRunner().invoke(app, [*args, *given], env={**env, **extra, "COLUMNS": "300"})
        assert result.exit_code == 2, result.output
        assert "Invalid value for '--prefix'" in result.output
        assert "a lower-case letter, then up to 30 lower-case letters and digits" in result.output
