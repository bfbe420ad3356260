"""Subscription tables: which handler each consumed event type goes to, as plain data.

A service's `subscriptions.py` holds `HANDLERS = {EventClass: handler, ...}`, handlers taking
`(deps, event, ctx)`. The composition root binds the deps and groups the table by stream, one
queue consumer per stream; the event catalog reads the same table to list consumers.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from google.protobuf.message import Message

from services.platform.events.consumer import Handler, HandlerContext
from services.platform.events.registry import EventRegistry

UnboundHandler = Callable[[Any, Any, HandlerContext], Awaitable[None]]


def bind(
    table: Mapping[type[Message], UnboundHandler], registry: EventRegistry, deps: object
) -> dict[str, dict[type[Message], Handler]]:
    """The table with `deps` bound into every handler, grouped by the stream of each event."""
    by_stream: dict[str, dict[type[Message], Handler]] = {}
    for event_class, handler in table.items():
        stream = registry.of(event_class).stream
        by_stream.setdefault(stream, {})[event_class] = functools.partial(handler, deps)
    return by_stream
