"""The business flow a piece of work belongs to: correlation, causation and user.

A gRPC interceptor or an event consumer sets it when work starts; the event codec reads it, so an
event published while handling a request or another event carries that flow on.
"""

from __future__ import annotations

import contextvars
import os
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")


class _RandomBytes:
    """The operating system's random bytes, read 4 KiB at a time: one system call for 256 ids."""

    __slots__ = ("_at", "_buffer")

    def __init__(self) -> None:
        self._buffer, self._at = b"", 0
        os.register_at_fork(after_in_child=self.forget)  # a child must not repeat its parent's ids

    def forget(self) -> None:
        self._buffer, self._at = b"", 0

    def take16(self) -> bytes:
        at = self._at
        if at + 16 > len(self._buffer):
            self._buffer, at = os.urandom(4096), 0
        self._at = at + 16
        return self._buffer[at : at + 16]


_random = _RandomBytes()


def new_id() -> str:
    """A random (version 4) UUID as text: what `str(uuid.uuid4())` gives, at a third of its cost.

    Every call and every event gets one; `uuid.UUID`'s constructor and `__str__` are most of the
    cost of `uuid4()`, not the 16 random bytes, which are read from the system 4 KiB at a time.
    """
    n = int.from_bytes(_random.take16(), "big")
    n = (n & ~(0xF000 << 64) & ~(0xC000 << 48)) | (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Scope(Generic[T]):
    """`with Scope(var, value):` runs a block with a context variable set, and restores it after.

    A class rather than a generator-based context manager: two of them wrap every call.
    """

    __slots__ = ("_token", "_value", "_var")

    def __init__(self, var: contextvars.ContextVar[T], value: T) -> None:
        self._var, self._value = var, value

    def __enter__(self) -> T:
        self._token = self._var.set(self._value)
        return self._value

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._var.reset(self._token)


@dataclass(frozen=True, slots=True)
class Flow:
    """Who and what caused the current work."""

    correlation_id: str
    causation_id: str = ""
    user_id: str = ""

    @classmethod
    def new(cls, user_id: str = "") -> Flow:
        """A new flow, for work that nothing else caused."""
        flow_id = new_id()
        return cls(correlation_id=flow_id, causation_id=flow_id, user_id=user_id)

    def caused_by(self, causation_id: str) -> Flow:
        """The same flow, one step further."""
        return replace(self, causation_id=causation_id)


_current: contextvars.ContextVar[Flow | None] = contextvars.ContextVar("a4co_flow", default=None)


def current_flow() -> Flow:
    """The flow of the running task, or a new one."""
    return _current.get() or Flow.new()


def flow_scope(flow: Flow) -> Scope[Flow | None]:
    """Run a block as part of `flow` (`with flow_scope(flow):`)."""
    return Scope(_current, flow)
