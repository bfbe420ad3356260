"""The registry of domain events and their streams, read from the contracts' descriptors.

Every event's subject, stream and version is declared once, as options in `proto/`; this module
is how code reads them, so no subject or stream name is ever repeated as a string literal.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import cast

from google.protobuf.descriptor import Descriptor, FileDescriptor
from google.protobuf.message import Message

from a4co.events.v1 import options_pb2

EVENTS_PACKAGE_MARKER = ".events.v"


class RegistryError(LookupError):
    """An event or stream is unknown, or the contracts declare them inconsistently."""


@dataclass(frozen=True, slots=True)
class StreamDef:
    """A JetStream stream that holds one bounded context's events."""

    name: str
    subjects: tuple[str, ...]
    producer: str
    description: str


@dataclass(frozen=True, slots=True)
class EventDef:
    """One domain event: its stable type, schema version and where it travels."""

    event_type: str
    name: str
    full_name: str
    context: str
    subject: str
    stream: str
    version: int
    aggregate_type: str
    message_class: type[Message]
    expires: bool = False  # each message leaves its stream at the time its producer sets

    @property
    def descriptor(self) -> Descriptor:
        """The protobuf descriptor of the event message."""
        return cast(Descriptor, self.message_class.DESCRIPTOR)


def context_of(package: str) -> str:
    """The bounded context of an events package: `a4co.orders.events.v1` -> `orders`."""
    parts = package.split(".")
    if len(parts) < 4 or parts[-2] != "events" or not parts[-1].startswith("v"):
        raise RegistryError(f"{package!r} is not an events package a4co.<context>.events.vN")
    return parts[-3]


def event_type_of(context: str, name: str) -> str:
    """The stable event type shared by all versions: `a4co.<context>.<EventName>`."""
    return f"a4co.{context}.{name}"


def stream_of_file(file: FileDescriptor) -> StreamDef | None:
    """The stream declared by an events file's `stream` option, if it has one."""
    options = file.GetOptions()
    if not options.HasExtension(options_pb2.stream):
        return None
    spec = options.Extensions[options_pb2.stream]
    return StreamDef(spec.name, tuple(spec.subjects), spec.producer, spec.description)


def event_of_class(message_class: type[Message]) -> EventDef | None:
    """The event declared by a message class's `event` option, or None for plain messages."""
    desc = message_class.DESCRIPTOR
    options = desc.GetOptions()
    if not options.HasExtension(options_pb2.event):
        return None
    spec = options.Extensions[options_pb2.event]
    context = context_of(desc.file.package)
    return EventDef(
        event_type=event_type_of(context, desc.name),
        name=desc.name,
        full_name=desc.full_name,
        context=context,
        subject=spec.subject,
        stream=spec.stream,
        version=spec.version,
        aggregate_type=spec.aggregate_type,
        message_class=message_class,
        expires=spec.expires,
    )


def subject_matches(subject: str, pattern: str) -> bool:
    """Whether a concrete NATS subject is captured by a filter with `*` and `>` wildcards."""
    parts, wanted = subject.split("."), pattern.split(".")
    for i, part in enumerate(wanted):
        if part == ">":
            return len(parts) > i
        if i >= len(parts) or part not in ("*", parts[i]):
            return False
    return len(parts) == len(wanted)


class EventRegistry:
    """All known events and streams, looked up by type and version, by class, or by stream."""

    def __init__(self, events: Iterable[EventDef], streams: Iterable[StreamDef]) -> None:
        self._streams = {s.name: s for s in streams}
        self._by_key: dict[tuple[str, int], EventDef] = {}
        self._by_class: dict[type[Message], EventDef] = {}
        for event in events:
            key = (event.event_type, event.version)
            if key in self._by_key:
                raise RegistryError(f"{event.event_type} v{event.version} is declared twice")
            if event.stream not in self._streams:
                raise RegistryError(f"{event.full_name} names unknown stream {event.stream!r}")
            self._by_key[key] = event
            self._by_class[event.message_class] = event

    @property
    def events(self) -> list[EventDef]:
        """Every event, ordered by stream, then subject, then version."""
        return sorted(self._by_key.values(), key=lambda e: (e.stream, e.subject, e.version))

    @property
    def streams(self) -> list[StreamDef]:
        """Every stream, ordered by name."""
        return [self._streams[name] for name in sorted(self._streams)]

    def stream(self, name: str) -> StreamDef:
        """The stream called `name`."""
        try:
            return self._streams[name]
        except KeyError:
            raise RegistryError(f"unknown stream {name!r}") from None

    def get(self, event_type: str, version: int) -> EventDef:
        """The event of the given type and schema version."""
        try:
            return self._by_key[(event_type, version)]
        except KeyError:
            raise RegistryError(f"unknown event {event_type} v{version}") from None

    def versions(self, event_type: str) -> list[int]:
        """The schema versions known for an event type, ascending."""
        return sorted(v for (t, v) in self._by_key if t == event_type)

    def latest(self, event_type: str) -> EventDef:
        """The newest known version of an event type."""
        versions = self.versions(event_type)
        if not versions:
            raise RegistryError(f"unknown event type {event_type}")
        return self._by_key[(event_type, versions[-1])]

    def of(self, message: Message | type[Message]) -> EventDef:
        """The event that a message (or message class) is."""
        cls = message if isinstance(message, type) else type(message)
        try:
            return self._by_class[cls]
        except KeyError:
            raise RegistryError(f"{cls.DESCRIPTOR.full_name} is not a domain event") from None


def _event_modules(root: ModuleType) -> Iterator[ModuleType]:
    for info in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
        if EVENTS_PACKAGE_MARKER in info.name and info.name.endswith("_pb2"):
            yield importlib.import_module(info.name)


def _message_classes(module: ModuleType) -> Iterator[type[Message]]:
    for name in module.DESCRIPTOR.message_types_by_name:
        yield getattr(module, name)


def load_registry(root_package: str = "a4co") -> EventRegistry:
    """Import every generated events module under `root_package` and register its events."""
    root = importlib.import_module(root_package)
    events: list[EventDef] = []
    streams: dict[str, StreamDef] = {}
    for module in _event_modules(root):
        stream = stream_of_file(module.DESCRIPTOR)
        if stream is not None:
            if streams.get(stream.name, stream) != stream:
                raise RegistryError(f"stream {stream.name} is declared differently twice")
            streams[stream.name] = stream
        events.extend(e for c in _message_classes(module) if (e := event_of_class(c)))
    return EventRegistry(events, streams.values())
