"""Upcasting: turn an event stored under an older schema version into the version a handler takes.

An upcaster is a pure function from version N-1 of an event to version N. A consumer registered
for version N receives older stored events through the chain of upcasters that leads to N.
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import Message

from services.platform.events.registry import EventDef

Upcaster = Callable[[Message], Message]


class NoUpcastPathError(LookupError):
    """No chain of upcasters leads from the stored version to the wanted one."""


class Upcasters:
    """The registered upcasters, by event type and the version they start from."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Upcaster] = {}

    def register(self, event_type: str, from_version: int, upcaster: Upcaster) -> None:
        """Register the step from `from_version` to `from_version + 1` of `event_type`."""
        key = (event_type, from_version)
        if key in self._steps:
            raise ValueError(f"an upcaster from {event_type} v{from_version} is already registered")
        self._steps[key] = upcaster

    def upcast(self, payload: Message, stored: EventDef, wanted: EventDef) -> Message:
        """Apply every step from the stored version up to the wanted one."""
        if stored.event_type != wanted.event_type:
            raise NoUpcastPathError(f"{stored.event_type} is not {wanted.event_type}")
        if stored.version > wanted.version:
            raise NoUpcastPathError(
                f"{stored.event_type} v{stored.version} is newer than the handled v{wanted.version}"
            )
        for version in range(stored.version, wanted.version):
            step = self._steps.get((stored.event_type, version))
            if step is None:
                raise NoUpcastPathError(f"no upcaster from {stored.event_type} v{version}")
            payload = step(payload)
        if type(payload) is not wanted.message_class:
            raise NoUpcastPathError(
                f"upcasting {stored.event_type} gave {type(payload).__name__}, "
                f"not {wanted.message_class.__name__}"
            )
        return payload
