"""The deadline of the call being served, passed on to the calls it makes to peers (gRPC's deadline
propagation): a peer is given no longer than the caller still waits, so that no work goes on for a
caller who has given up.

The platform's interceptor sets it for each call it serves; `PeerClient` reads it. Work that no
call started (an event handler, a sweep) has none, and a peer call then has its own timeout only.
"""

from __future__ import annotations

import contextvars
import time

from services.platform.flow import Scope

_caller_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "a4co_caller_deadline", default=None
)


def caller_deadline_scope(time_remaining_s: float | None) -> Scope[float | None]:
    """Serve a call whose caller waits `time_remaining_s` more (None: no deadline)
    (`with caller_deadline_scope(context.time_remaining()):`)."""
    deadline = None if time_remaining_s is None else time.monotonic() + time_remaining_s
    return Scope(_caller_deadline, deadline)


def caller_deadline() -> float | None:
    """When the caller of the call being served stops waiting, on `time.monotonic()`'s clock;
    None outside a call, or for a caller without a deadline."""
    return _caller_deadline.get()
