"""The business flow a piece of work belongs to: correlation, causation and user.

A gRPC interceptor or an event consumer sets it when work starts; the event codec reads it, so an
event published while handling a request or another event carries that flow on.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Flow:
    """Who and what caused the current work."""

    correlation_id: str
    causation_id: str = ""
    user_id: str = ""

    @classmethod
    def new(cls, user_id: str = "") -> Flow:
        """A new flow, for work that nothing else caused."""
        flow_id = str(uuid.uuid4())
        return cls(correlation_id=flow_id, causation_id=flow_id, user_id=user_id)

    def caused_by(self, causation_id: str) -> Flow:
        """The same flow, one step further."""
        return replace(self, causation_id=causation_id)


_current: contextvars.ContextVar[Flow | None] = contextvars.ContextVar("a4co_flow", default=None)


def current_flow() -> Flow:
    """The flow of the running task, or a new one."""
    return _current.get() or Flow.new()


@contextmanager
def flow_scope(flow: Flow) -> Iterator[Flow]:
    """Run a block as part of `flow`."""
    token = _current.set(flow)
    try:
        yield flow
    finally:
        _current.reset(token)
