"""`a4co`'s entry point, which pyproject's script and `python -m services.cli` share: the platform's
warnings while a command runs reach standard error named, and only warnings; a reader that stops
reading ends a command quietly."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

# A command whose run logs what the platform's code would: a warning and an INFO line.
COMMAND = """
import logging
from services.cli import main
def run(**kwargs):
    log = logging.getLogger("services.platform.events.streams")
    log.info("not said")
    log.warning("reading DLQ: JetStream did not answer; asking again in 0.5 s")
main.app = run
main.main()
"""


def test_a_platform_warning_is_said_as_the_commands_own() -> None:
    done = subprocess.run([sys.executable, "-c", COMMAND], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "a4co: reading DLQ: JetStream did not answer; asking again in 0.5 s\n"


def test_the_installed_script_and_the_module_run_the_same_function() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["a4co"] == "services.cli.main:main"
    module = (Path(__file__).parents[3] / "services" / "cli" / "__main__.py").read_text()
    assert "main()" in module.splitlines()[-1]


@pytest.mark.parametrize("args", [("nats-permissions",), ("--help",), ("dlq", "list", "--help")])
def test_a_reader_that_stops_reading_ends_a_command_quietly(args: tuple[str, ...]) -> None:
    """`a4co … | head` whose head has had enough before the first line: status 0 and nothing on
    standard error, as a filter ends, not typer's status 1."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (0, "")


# A command of a4co's kind that fails on its own, printing nothing.
FAILING = """
import typer
from services.cli.main import Commands
app = typer.Typer(cls=Commands)
@app.command()
def fail() -> None:
    raise typer.Exit(1)
@app.command()
def other() -> None:
    pass
app()
"""


def test_a_command_that_fails_still_fails_with_its_reader_gone() -> None:
    """Only a broken pipe turns typer's status 1 into 0: a command's own status 1 stays, whether or
    not its reader has gone."""
    read, write = os.pipe()
    os.close(read)
    try:
        gone = subprocess.run([sys.executable, "-c", FAILING, "fail"], stdout=write, timeout=60)
    finally:
        os.close(write)
    there = subprocess.run([sys.executable, "-c", FAILING, "fail"], capture_output=True, timeout=60)
    assert (gone.returncode, there.returncode) == (1, 1)
