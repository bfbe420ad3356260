"""The `a4co` command line."""

from __future__ import annotations

import logging
from typing import Any

import typer
from typer.core import TyperGroup

from services.cli import check, demo, dlq, events, permissions, status, trace


class Commands(TyperGroup):
    """a4co's commands. One whose reader stops reading (`a4co dlq list | head`) ends with status 0
    and nothing on standard error, as a filter does (`events tail` stops reading its streams too),
    where typer would end it with status 1, which `set -o pipefail` takes for a failure."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, **kwargs)
        except SystemExit as exc:
            # typer's answer to a broken pipe: standard output wrapped so that Python's last
            # flush at exit is quiet, then status 1, while handling the BrokenPipeError.
            if exc.code == 1 and isinstance(exc.__context__, BrokenPipeError):
                raise SystemExit(0) from None
            raise


app = typer.Typer(help="Operate the a4co marketplace.", no_args_is_help=True, cls=Commands)
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
