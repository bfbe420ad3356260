"""`a4co events tail`: live events, decoded to JSON."""

from __future__ import annotations

import asyncio
import json
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
        try:
            while count == 0 or seen < count:
                msg = await queue.get()
                try:
                    event = codec.decode(msg.data)
                except (EventDecodeError, UnknownEventError) as exc:
                    if (line := _undecodable(msg, str(exc), types)) is not None:
                        typer.echo(line)
                    continue
                if not _chosen(event.definition.event_type, types):
                    continue
                envelope = json_format.MessageToDict(event.envelope, preserving_proto_field_name=True)
                envelope["payload"] = json_format.MessageToDict(
                    event.payload, preserving_proto_field_name=True
                )
                # A reader that has gone (`| head`) raises BrokenPipeError here: the command then
                # ends with status 0 and nothing on standard error (`main.Commands`).
                typer.echo(json.dumps(envelope, ensure_ascii=False))
                seen += 1
        finally:
            for subscription in subscriptions:
                await subscription.unsubscribe()


def _chosen(event_type: str, types: set[str]) -> bool:
    """Whether `--type` asked for `event_type` (a4co.orders.OrderCreated), by it or by its name
    (OrderCreated); everything when it asked for none."""
    return not types or event_type in types or event_type.rpartition(".")[2] in types


def _undecodable(msg: Msg, error: str, types: set[str]) -> str | None:
    """The line of a message that is no event this command knows, with where to find it (`a4co
    dlq` shows the letters the consumers made of it) and the type its headers claim, if any; None
    when `--type` asked for others."""
    claimed = (msg.headers or {}).get("ce-type", "")
    if types and not (claimed and _chosen(claimed, types)):
        return None
    meta = msg.metadata
    line = {"undecodable": error, "subject": msg.subject, "stream": meta.stream, "seq": meta.sequence.stream}
    if claimed:
        line["claimed_type"] = claimed
    return json.dumps(line, ensure_ascii=False)


def _into(queue: asyncio.Queue[Msg]) -> Callable[[Msg], Awaitable[None]]:
    async def put(msg: Msg) -> None:
        queue.put_nowait(msg)

    return put
