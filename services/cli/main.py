"""The `a4co` command line."""

from __future__ import annotations

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
