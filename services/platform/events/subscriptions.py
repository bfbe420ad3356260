"""Subscription tables: which handler each consumed event type goes to, as plain data.

A service's `subscriptions.py` holds `HANDLERS = {EventClass: handler, ...}`, handlers taking
`(deps, event, ctx)`, or `Only(handler, when, note)` for a handler that acts on some events of its
type only (the others are acknowledged without a transaction). The composition root binds the deps
and groups the table by stream, one queue consumer per stream; the event catalog reads the same
table to list consumers.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from services.platform.events.consumer import Handler, HandlerContext, Selective
from services.platform.events.registry import EventRegistry

UnboundHandler = Callable[[Any, Any, HandlerContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Only:
    """`handler` for the events of its type that `when` accepts; `note` says which, for the catalog."""

    handler: UnboundHandler
    when: Callable[[Any], bool]
    note: str


Table = Mapping[type[Message], UnboundHandler | Only]


def bind(
    table: Table, registry: EventRegistry, deps: object
) -> dict[str, dict[type[Message], Handler | Selective]]:
    """The table with `deps` bound into every handler, grouped by the stream of each event."""
    by_stream: dict[str, dict[type[Message], Handler | Selective]] = {}
    for event_class, entry in table.items():
        stream = registry.of(event_class).stream
        bound: Handler | Selective
        if isinstance(entry, Only):
            bound = Selective(functools.partial(entry.handler, deps), entry.when)
        else:
            bound = functools.partial(entry, deps)
        by_stream.setdefault(stream, {})[event_class] = bound
    return by_stream
