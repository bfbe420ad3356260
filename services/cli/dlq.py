"""`a4co dlq`: inspect, analyse, replay and discard dead letters."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import typer
from google.protobuf import json_format
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from services.cli.connection import NatsUrl, Prefix, Target, jetstream
from services.platform.events.codec import EventCodec, EventDecodeError, UnknownEventError
from services.platform.events.dlq import (
    DeadLetter,
    DeadLetterFilter,
    DeadLetterNotFoundError,
    DeadLetterQueue,
)
from services.platform.events.registry import load_registry

app = typer.Typer(help="Inspect, analyse, replay and discard dead letters.", no_args_is_help=True)
console = Console()
T = TypeVar("T")
# How much of a letter's error `dlq list` shows (`show` and --json give it whole).
ERROR_SHOWN = 200
# The least width a table leaves its last column (the error) before rows go on lines of their own.
WIDE_MIN = 30

Consumer = Annotated[str, typer.Option("--consumer", "-c", help="only this consumer (service)")]
EventType = Annotated[
    str, typer.Option("--type", "-t", help="only this event: OrderCreated or a4co.orders.OrderCreated")
]
Reason = Annotated[str, typer.Option("--reason", "-r", help="only this reason")]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def run(target: Target, action: Callable[[DeadLetterQueue], Awaitable[T]]) -> T:
    """Connect, run `action` on the dead-letter queue, disconnect."""

    async def main() -> T:
        async with jetstream(target) as js:
            return await action(DeadLetterQueue(js, target.topology))

    try:
        return asyncio.run(main())  # a missing DLQ stream is said by jetstream()
    except DeadLetterNotFoundError as exc:
        typer.echo(f"{exc} (a4co dlq list shows those there)", err=True)
        raise typer.Exit(1) from None


def _said_missing(named: list[int] | None, where: DeadLetterFilter, found: list[int]) -> bool:
    """Say which sequences named are not among the dead letters found, if any: whether some were."""
    if missing := sorted(set(named or []) - set(found)):
        filtered = " that --consumer/--type/--reason select" if _filtered(where) else ""
        typer.echo(
            f"no such dead letter in the DLQ{filtered}: {', '.join(map(str, missing))}"
            " (replayed or discarded already? a4co dlq list shows those there)",
            err=True,
        )
    return bool(missing)


def _filter(seqs: list[int] | None, consumer: str, event_type: str, reason: str) -> DeadLetterFilter:
    """The letters selected; an event type given by its name (OrderCreated, as the tables show
    it) stands for its full type."""
    full = {name: full for full, name in _names().items()}.get(event_type, event_type)
    return DeadLetterFilter(frozenset(seqs or []), consumer, full, reason)


def _print_rows(columns: list[str], rows: list[list[str]]) -> None:
    """Rows under their columns, the last of which (an error) takes the width left and folds. A
    terminal too narrow for the others plus WIDE_MIN of it (80 columns, say) gets each row on a
    line of its own with the last value indented beneath, so that nothing is cut short."""
    *fixed, wide = columns
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(fixed)]
    if console.width >= sum(widths) + 3 * len(columns) + 1 + WIDE_MIN:
        table = Table()
        for name in fixed:
            table.add_column(name, no_wrap=True)
        table.add_column(wide, ratio=1, overflow="fold")
        for row in rows:
            table.add_row(*map(Text, row))  # values as they are: "[x]" in an error is no markup
        console.print(table)
        return
    for i, (*values, last) in enumerate([columns, *rows]):
        line = "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()
        style = "" if i else "bold"
        console.print(Text(line, style=style), soft_wrap=True)  # longer than the terminal: it wraps
        console.print(Padding(Text(last, style=style), (0, 0, 0, 4), expand=False))


@functools.cache
def _names() -> dict[str, str]:
    """Each event's name (OrderCreated) by its full type (a4co.orders.OrderCreated)."""
    return {e.event_type: e.name for e in load_registry().events}


def _name(event_type: str) -> str:
    """An event's name for its full type; a type the contracts do not declare (an undecodable
    letter's "unknown") as it is."""
    return _names().get(event_type, event_type)


def _when(moment: str) -> str:
    """A dead letter's time, to the second, in UTC: 2026-12-03 10:46:51."""
    try:
        return datetime.fromisoformat(moment).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return moment  # not a time this command wrote: as it is


@app.command("list")
def list_(
    consumer: Consumer = "",
    event_type: EventType = "",
    reason: Reason = "",
    limit: Annotated[int, typer.Option(help="at most this many", min=1)] = 100,
    as_json: AsJson = False,
    nats_url: NatsUrl = None,
    prefix: Prefix = None,
) -> None:
    """List dead letters, oldest first."""
    where = _filter(None, consumer, event_type, reason)
    letters = run(Target.resolve(nats_url, prefix), lambda q: q.browse(where, limit))
    if as_json:
        typer.echo(json.dumps([x.summary() for x in letters], indent=2))
        return
    _print_rows(
        ["seq", "when (UTC)", "event", "consumer", "reason", "deliveries", "error"],
        [
            [
                str(x.seq),
                _when(x.dead_lettered_at),
                _name(x.event_type),
                x.consumer,
                x.reason,
                str(x.deliveries),
                x.error_within(ERROR_SHOWN),
            ]
            for x in letters
        ],
    )
    console.print(f"{len(letters)} dead letter(s)")


@app.command()
def show(
    seq: Annotated[int, typer.Argument(help="the dead letter's sequence in the DLQ stream")],
    nats_url: NatsUrl = None,
    prefix: Prefix = None,
) -> None:
    """Show one dead letter: its headers and its decoded event."""
    target = Target.resolve(nats_url, prefix)
    letter = run(target, lambda q: q.get(seq))
    typer.echo(json.dumps(describe(letter, target), indent=2, ensure_ascii=False))


def describe(letter: DeadLetter, target: Target) -> dict[str, object]:
    """A dead letter as a JSON-ready document, with the event decoded when it can be."""
    document: dict[str, object] = {**letter.summary(), "headers": letter.headers}
    codec = EventCodec(load_registry(), "cli", target.topology)
    try:
        incoming = codec.decode(letter.body)
    except (EventDecodeError, UnknownEventError) as exc:
        document["event"] = None
        document["decode_error"] = str(exc)
        document["body_hex"] = letter.body[:256].hex()
    else:
        document["envelope"] = json_format.MessageToDict(incoming.envelope, preserving_proto_field_name=True)
        document["event"] = json_format.MessageToDict(incoming.payload, preserving_proto_field_name=True)
    return document


@app.command()
def stats(
    consumer: Consumer = "",
    event_type: EventType = "",
    as_json: AsJson = False,
    nats_url: NatsUrl = None,
    prefix: Prefix = None,
) -> None:
    """Group dead letters by event type, consumer, reason and error pattern."""
    where = _filter(None, consumer, event_type, "")
    rows = run(Target.resolve(nats_url, prefix), lambda q: q.stats(where))
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return
    _print_rows(
        ["count", "event", "consumer", "reason", "first (UTC)", "last (UTC)", "error pattern"],
        [
            [
                str(r.count),
                _name(r.event_type),
                r.consumer,
                r.reason,
                _when(r.first_at),
                _when(r.last_at),
                r.pattern,
            ]
            for r in rows
        ],
    )


def _filtered(where: DeadLetterFilter) -> bool:
    """Whether `where` selects by consumer, event type or reason."""
    return bool(where.consumer or where.event_type or where.reason)


def _require_selection(seqs: list[int] | None, where: DeadLetterFilter, everything: bool) -> None:
    if not (seqs or _filtered(where) or everything):
        raise typer.BadParameter("name sequences, a filter (--consumer/--type/--reason), or --all")


@app.command()
def replay(
    seqs: Annotated[list[int] | None, typer.Argument(help="sequences to replay")] = None,
    consumer: Consumer = "",
    event_type: EventType = "",
    reason: Reason = "",
    everything: Annotated[bool, typer.Option("--all", help="replay every dead letter")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would be replayed")] = False,
    rate: Annotated[float, typer.Option(help="at most this many per second (0: no limit)", min=0)] = 50.0,
    broadcast: Annotated[
        bool, typer.Option(help="deliver to every consumer, not only the one that failed")
    ] = False,
    nats_url: NatsUrl = None,
    prefix: Prefix = None,
) -> None:
    """Publish dead letters again on their original subjects, then remove them from the DLQ."""
    where = _filter(seqs, consumer, event_type, reason)
    _require_selection(seqs, where, everything)
    report = run(
        Target.resolve(nats_url, prefix),
        lambda q: q.replay(where, dry_run=dry_run, rate_per_s=rate, broadcast=broadcast),
    )
    verb = "would replay" if dry_run else "replayed"
    console.print(f"{verb} {len(report.replayed)} dead letter(s): {_runs(report.replayed)}")
    for seq, error in report.failed.items():
        console.print(f"[red]failed {seq}: {escape(error)}[/red]")
    missing = _said_missing(seqs, where, [*report.replayed, *report.failed])
    if report.failed or missing:
        raise typer.Exit(1)


@app.command()
def discard(
    seqs: Annotated[list[int] | None, typer.Argument(help="sequences to discard")] = None,
    consumer: Consumer = "",
    event_type: EventType = "",
    reason: Reason = "",
    everything: Annotated[bool, typer.Option("--all", help="discard every dead letter")] = False,
    nats_url: NatsUrl = None,
    prefix: Prefix = None,
) -> None:
    """Delete dead letters for good."""
    where = _filter(seqs, consumer, event_type, reason)
    _require_selection(seqs, where, everything)
    gone = run(Target.resolve(nats_url, prefix), lambda q: q.discard(where))
    console.print(f"discarded {len(gone)} dead letter(s): {_runs(gone)}")
    if _said_missing(seqs, where, gone):
        raise typer.Exit(1)


def _runs(seqs: list[int]) -> str:
    """Sequences, each run of consecutive ones as its ends: [3, 5-9, 12] (discarding thousands
    prints one line, not thousands of numbers)."""
    runs: list[list[int]] = []
    for seq in seqs:
        if runs and seq == runs[-1][-1] + 1:
            runs[-1][1:] = [seq]
        else:
            runs.append([seq])
    return "[" + ", ".join("-".join(map(str, run)) for run in runs) + "]"
