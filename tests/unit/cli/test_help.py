"""The command's help: each command's summary is one paragraph without a line break in it, as
`a4co --help` (rich's table keeps a docstring's line breaks) lists them."""

from __future__ import annotations

import inspect
from typing import Any

import typer
from typer.core import TyperGroup

from services.cli.main import app


def commands(group: TyperGroup, path: str = "a4co") -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, command in group.commands.items():
        found[f"{path} {name}"] = command
        if isinstance(command, TyperGroup):
            found.update(commands(command, f"{path} {name}"))
    return found


def test_every_command_has_a_summary_of_one_unbroken_line() -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    listed = commands(group)
    assert {"a4co status", "a4co nats-permissions", "a4co dlq replay", "a4co events tail"} <= set(listed)
    for name, command in listed.items():
        summary = inspect.cleandoc(command.short_help or command.help or "").split("\n\n")[0]
        assert summary, f"{name} has no help"
        assert "\n" not in summary, f"{name}'s summary is broken over lines: {summary!r}"
