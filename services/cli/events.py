"""`a4co events tail`: live events, decoded to JSON."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated

import typer
from google.protobuf import json_format
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from services.cli.connection import NatsUrl, Prefix, Target, jetstream
from services.platform.events.codec import EventCodec, EventDecodeError, UnknownEventError
from services.platform.events.registry import EventRegistry, load_registry

app = typer.Typer(help="Watch the event streams.", no_args_is_help=True)


@app.command()
def tail(
    event_type: Annotated[
        list[str] | None,
        typer.Option("--type", "-t", help="only these events: OrderCreated or a4co.orders.OrderCreated"),
    ] = None,
    from_start: Annotated[
        bool, typer.Option("--from-start", help="replay the streams from the beginning")
    ] = False,
    count: Annotated[int, typer.Option(help="stop after this many events (0: never)", min=0)] = 0,
    nats_url: NatsUrl = None,
    prefix: Prefix = None,
) -> None:
    """Print events as they are published, one JSON object a line (Ctrl-C stops).

    A message that is no event this command knows prints as {"undecodable": why, "subject",
    "stream", "seq"}, unless --type asks for other events."""
    registry = load_registry()
    types = set(event_type or [])
    names = {e.name for e in registry.events}
    if unknown := sorted(types - names - {e.event_type for e in registry.events}):
        # A misspelt type would match nothing, and the tail would wait for ever in silence.
        raise typer.BadParameter(
            f"no event is called {', '.join(unknown)}; the events are {', '.join(sorted(names))}"
            " (or their full types, such as a4co.orders.OrderCreated)",
            param_hint="'--type'",
        )
    target = Target.resolve(nats_url, prefix)
    asyncio.run(_tail(target, registry, types, from_start, count))


async def _tail(
    target: Target, registry: EventRegistry, types: set[str], from_start: bool, count: int
) -> None:
    codec = EventCodec(registry, "cli", target.topology)
    queue: asyncio.Queue[Msg] = asyncio.Queue()
    async with jetstream(target) as js:
        policy = DeliverPolicy.ALL if from_start else DeliverPolicy.NEW
        subscriptions = []
        for stream in registry.streams:
            if stream.name == "DLQ":
                continue
            for subject in target.topology.stream_subjects(stream):
                try:
                    subscriptions.append(
                        await js.subscribe(
                            subject,
                            stream=target.topology.stream(stream.name),  # not looked up: no STREAM.NAMES
                            ordered_consumer=True,
                            deliver_policy=policy,
                            cb=_into(queue),
                        )
                    )
                except NotFoundError:  # no stream holds the subject
                    raise target.missing_stream(stream.name) from None
        seen = 0
        while count == 0 or seen < count:
            msg = await queue.get()
            try:
                event = codec.decode(msg.data)
            except (EventDecodeError, UnknownEventError) as exc:
                if not _printed_undecodable(msg, str(exc), types):
                    break
                continue
            if not _chosen(event.definition.event_type, types):
                continue
            envelope = json_format.MessageToDict(event.envelope, preserving_proto_field_name=True)
            envelope["payload"] = json_format.MessageToDict(event.payload, preserving_proto_field_name=True)
            if not _printed(json.dumps(envelope, ensure_ascii=False)):
                break
            seen += 1
        for subscription in subscriptions:
            await subscription.unsubscribe()


def _printed(line: str) -> bool:
    """Print `line`; False once whoever reads the output has stopped (`| head`): the tail then ends
    with status 0 and nothing on standard error, as any filter does, instead of click's status 1."""
    try:
        typer.echo(line)
    except BrokenPipeError:
        # Python flushes standard output again at exit: point it at /dev/null so that is quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return False
    return True


def _chosen(event_type: str, types: set[str]) -> bool:
    """Whether `--type` asked for `event_type` (a4co.orders.OrderCreated), by it or by its name
    (OrderCreated); everything when it asked for none."""
    return not types or event_type in types or event_type.rpartition(".")[2] in types


def _printed_undecodable(msg: Msg, error: str, types: set[str]) -> bool:
    """A message that is no event this command knows, with where to find it (`a4co dlq` shows the
    letters the consumers made of it), and the type its headers claim, if any: printed unless
    `--type` asked for others. False once the reader has gone (`_printed`)."""
    claimed = (msg.headers or {}).get("ce-type", "")
    if types and not (claimed and _chosen(claimed, types)):
        return True
    meta = msg.metadata
    line = {"undecodable": error, "subject": msg.subject, "stream": meta.stream, "seq": meta.sequence.stream}
    if claimed:
        line["claimed_type"] = claimed
    return _printed(json.dumps(line, ensure_ascii=False))


def _into(queue: asyncio.Queue[Msg]) -> Callable[[Msg], Awaitable[None]]:
    async def put(msg: Msg) -> None:
        queue.put_nowait(msg)

    return put
