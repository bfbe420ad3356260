"""The `a4co` command line."""

from __future__ import annotations

import logging

import typer

from services.cli import check, demo, dlq, events, permissions, status, trace

app = typer.Typer(help="Operate the a4co marketplace.", no_args_is_help=True)
app.add_typer(dlq.app, name="dlq")
app.add_typer(events.app, name="events")
app.command("status")(status.status)
app.command("demo")(demo.demo)
app.command("trace")(trace.trace)
app.command("check")(check.invariants)
app.command("nats-permissions")(permissions.nats_permissions)


def main() -> None:
    """`a4co` (pyproject's script, `python -m services.cli`, `.venv/bin/a4co`): what the platform's
    code says while a command runs (JetStream asked again in a cluster, NATS lost and found again)
    goes to standard error named, instead of as Python's bare last-resort lines."""
    logging.basicConfig(format="a4co: %(message)s", level=logging.WARNING)
    app(prog_name="a4co")
