"""Write the event catalog, `docs/events.md` and `docs/asyncapi.yaml`, from the contracts.

Everything comes from the descriptors: subjects, streams and versions from the event options,
field documentation from the comments in `proto/`, producers from the stream options and
consumers from the services' subscription tables.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from services.cli.permissions import subscription_tables
from services.platform.events.registry import EventDef, EventRegistry, load_registry
from services.platform.events.subscriptions import Only
from tools.protoset import build_descriptor_set

# Paths inside FileDescriptorProto, as used by SourceCodeInfo.Location.path.
_MESSAGE, _FIELD, _ENUM, _ENUM_VALUE = 4, 2, 5, 2

_SCALARS: dict[int, tuple[str, dict[str, Any]]] = {
    FieldDescriptor.TYPE_DOUBLE: ("double", {"type": "number"}),
    FieldDescriptor.TYPE_FLOAT: ("float", {"type": "number"}),
    FieldDescriptor.TYPE_INT64: ("int64", {"type": "string", "format": "int64"}),
    FieldDescriptor.TYPE_UINT64: ("uint64", {"type": "string", "format": "uint64"}),
    FieldDescriptor.TYPE_INT32: ("int32", {"type": "integer", "format": "int32"}),
    FieldDescriptor.TYPE_UINT32: ("uint32", {"type": "integer", "format": "uint32"}),
    FieldDescriptor.TYPE_SINT32: ("sint32", {"type": "integer", "format": "int32"}),
    FieldDescriptor.TYPE_SINT64: ("sint64", {"type": "string", "format": "int64"}),
    FieldDescriptor.TYPE_BOOL: ("bool", {"type": "boolean"}),
    FieldDescriptor.TYPE_STRING: ("string", {"type": "string"}),
    FieldDescriptor.TYPE_BYTES: ("bytes", {"type": "string", "contentEncoding": "base64"}),
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.FieldMask": {"type": "string"},
}
CE_HEADERS: dict[str, str] = {
    "ce-specversion": "The CloudEvents version, always 1.0.",
    "ce-id": "The event id (a UUID), equal to the envelope's event_id.",
    "ce-type": "The stable event type, for example a4co.orders.OrderCreated.",
    "ce-source": "The producing service, for example /a4co/orders.",
    "ce-time": "When the state change was committed, RFC 3339 in UTC.",
    "ce-subject": "The id of the aggregate the event is about.",
    "ce-dataschema": "The protobuf message and version of the payload.",
    "content-type": "application/protobuf: the body is an a4co.events.v1.EventEnvelope.",
    "Nats-Msg-Id": "The event id again, so that JetStream drops a republished duplicate.",
    "traceparent": "The W3C trace context of the producer's span.",
    "Nats-TTL": "Only on the events declared `expires`: how long JetStream keeps the message, as 1800s.",
}


class Comments:
    """Leading comments of messages, fields, enums and values, by full name."""

    def __init__(self, fds: descriptor_pb2.FileDescriptorSet) -> None:
        self._text: dict[str, str] = {}
        for file in fds.file:
            by_path = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}
            prefix = f"{file.package}." if file.package else ""
            for i, msg in enumerate(file.message_type):
                self._add(by_path, (_MESSAGE, i), prefix + msg.name)
                for j, field in enumerate(msg.field):
                    self._add(by_path, (_MESSAGE, i, _FIELD, j), f"{prefix}{msg.name}.{field.name}")
            for i, enum in enumerate(file.enum_type):
                self._add(by_path, (_ENUM, i), prefix + enum.name)
                for j, value in enumerate(enum.value):
                    self._add(by_path, (_ENUM, i, _ENUM_VALUE, j), f"{prefix}{enum.name}.{value.name}")

    def _add(self, by_path: Mapping[tuple[int, ...], str], path: tuple[int, ...], name: str) -> None:
        self._text[name] = " ".join(by_path.get(path, "").split())

    def __getitem__(self, full_name: str) -> str:
        return self._text.get(full_name, "")


def discover_consumers(registry: EventRegistry) -> dict[str, list[str]]:
    """Event type -> consuming services, read from each `services.<ctx>.subscriptions.HANDLERS`."""
    consumers: dict[str, list[str]] = defaultdict(list)
    for service, table in subscription_tables().items():
        for event_class, entry in table.items():
            note = f" ({entry.note} only)" if isinstance(entry, Only) else ""
            consumers[registry.of(event_class).event_type].append(service + note)
    return {k: sorted(set(v)) for k, v in consumers.items()}


def _type_name(field: FieldDescriptor) -> str:
    if field.message_type is not None:
        name = field.message_type.full_name
    elif field.enum_type is not None:
        name = field.enum_type.full_name
    else:
        name = _SCALARS[field.type][0]
    return f"repeated {name}" if field.is_repeated else name


def _cell(text: str) -> str:
    return text.replace("|", "\\|") or "—"


def render_markdown(registry: EventRegistry, comments: Comments, consumers: Mapping[str, list[str]]) -> str:
    """The catalog for people: streams, then each event with its fields."""
    out = [
        "# Event catalog",
        "",
        "Generated by `make catalog` from `proto/`; do not edit. Every event travels as an",
        "`a4co.events.v1.EventEnvelope` (see [the envelope](#the-envelope)) with CloudEvents NATS",
        "headers; subjects, streams and versions are the options declared on each message.",
        "",
        "| event type | version | subject | stream | producer | consumers |",
        "|---|---|---|---|---|---|",
    ]
    for e in registry.events:
        producer = registry.stream(e.stream).producer
        cons = ", ".join(consumers.get(e.event_type, [])) or "—"
        anchor = f"{e.name.lower()}-v{e.version}"
        out.append(
            f"| [{e.event_type}](#{anchor}) | {e.version} | `{e.subject}` | {e.stream} "
            f"| {producer} | {cons} |"
        )
    out += ["", "## Streams", "", "| stream | subjects | producer | holds |", "|---|---|---|---|"]
    for s in registry.streams:
        subjects = ", ".join(f"`{x}`" for x in s.subjects)
        out.append(f"| {s.name} | {subjects} | {s.producer} | {s.description} |")
    for e in registry.events:
        out += _markdown_event(e, registry, comments, consumers)
    out += ["", "## The envelope", "", comments["a4co.events.v1.EventEnvelope"], ""]
    out += _markdown_fields(_envelope_descriptor(), comments)
    out += ["", "### NATS headers", "", "| header | meaning |", "|---|---|"]
    out += [f"| `{k}` | {v} |" for k, v in CE_HEADERS.items()]
    return "\n".join(out) + "\n"


def _markdown_event(
    e: EventDef, registry: EventRegistry, comments: Comments, consumers: Mapping[str, list[str]]
) -> list[str]:
    lines = [
        "",
        f"## {e.name} v{e.version}",
        "",
        comments[e.full_name],
        "",
        f"- type: `{e.event_type}`, message `{e.full_name}`",
        f"- subject: `{e.subject}` in stream {e.stream}; aggregate: {e.aggregate_type}",
        f"- producer: {registry.stream(e.stream).producer}; consumers: "
        + (", ".join(consumers.get(e.event_type, [])) or "none yet"),
        *(
            ["- expires: each message leaves its stream at the time its producer sets (`Nats-TTL`)"]
            if e.expires
            else []
        ),
        "",
    ]
    lines += _markdown_fields(e.descriptor, comments)
    for nested in _referenced_types(e.descriptor):
        lines += ["", f"**{nested.full_name}** — {comments[nested.full_name]}", ""]
        if isinstance(nested, EnumDescriptor):
            lines += ["| value | meaning |", "|---|---|"]
            lines += [
                f"| `{v.name}` | {_cell(comments[f'{nested.full_name}.{v.name}'])} |" for v in nested.values
            ]
        else:
            lines += _markdown_fields(nested, comments)
    return lines


def _markdown_fields(desc: Descriptor, comments: Comments) -> list[str]:
    rows = ["| # | field | type | meaning |", "|---|---|---|---|"]
    for f in desc.fields:
        rows.append(f"| {f.number} | `{f.name}` | `{_type_name(f)}` | {_cell(comments[f.full_name])} |")
    return rows


def _referenced_types(desc: Descriptor) -> list[Descriptor | EnumDescriptor]:
    """Messages and enums the event uses, depth first, each once, well-known types excluded."""
    seen: dict[str, Descriptor | EnumDescriptor] = {}

    def visit(d: Descriptor) -> None:
        for f in d.fields:
            target: Descriptor | EnumDescriptor | None = f.message_type or f.enum_type
            if target is None or target.full_name in seen or target.full_name.startswith("google."):
                continue
            seen[target.full_name] = target
            if isinstance(target, Descriptor):
                visit(target)

    visit(desc)
    return list(seen.values())


def _envelope_descriptor() -> Descriptor:
    from a4co.events.v1 import envelope_pb2

    return envelope_pb2.EventEnvelope.DESCRIPTOR


def _json_schema(desc: Descriptor, comments: Comments, schemas: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for f in desc.fields:
        if f.message_type is not None and f.message_type.full_name in _WELL_KNOWN:
            item: dict[str, Any] = dict(_WELL_KNOWN[f.message_type.full_name])
        elif f.message_type is not None:
            ref = f.message_type.full_name
            if ref not in schemas:
                schemas[ref] = {}
                schemas[ref] = _json_schema(f.message_type, comments, schemas)
            item = {"$ref": f"#/components/schemas/{ref}"}
        elif f.enum_type is not None:
            item = {"type": "string", "enum": [v.name for v in f.enum_type.values]}
        else:
            item = dict(_SCALARS[f.type][1])
        if f.is_repeated:
            item = {"type": "array", "items": item}
        if "$ref" not in item:
            item["description"] = comments[f.full_name]
        item["x-protobuf-field"] = f.number
        properties[f.json_name] = item
    return {
        "type": "object",
        "description": comments[desc.full_name],
        "x-protobuf-message": desc.full_name,
        "properties": properties,
    }


def render_asyncapi(
    registry: EventRegistry, comments: Comments, consumers: Mapping[str, list[str]]
) -> dict[str, Any]:
    """An AsyncAPI 3.0 document: one channel per event subject, send and receive operations."""
    schemas: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for e in registry.events:
        key = f"{e.name}V{e.version}"
        producer = registry.stream(e.stream).producer
        messages[key] = {
            "name": e.event_type,
            "title": f"{e.name} v{e.version}",
            "summary": comments[e.full_name],
            "contentType": "application/protobuf",
            "traits": [{"$ref": "#/components/messageTraits/cloudEventsNats"}],
            "payload": _json_schema(e.descriptor, comments, schemas),
            "x-a4co-event": {
                "type": e.event_type,
                "version": e.version,
                "stream": e.stream,
                "aggregate_type": e.aggregate_type,
                "expires": e.expires,
                "producer": producer,
                "consumers": consumers.get(e.event_type, []),
            },
        }
        channels[key] = {
            "address": e.subject,
            "title": f"{e.stream}: {e.subject}",
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
        }
        ref = {"$ref": f"#/channels/{key}"}
        msg_ref = [{"$ref": f"#/channels/{key}/messages/{key}"}]
        operations[f"{producer}.publish{key}"] = {
            "action": "send",
            "channel": ref,
            "messages": msg_ref,
        }
        for consumer in consumers.get(e.event_type, []):
            operations[f"{consumer}.consume{key}"] = {
                "action": "receive",
                "channel": ref,
                "messages": msg_ref,
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "a4co domain events",
            "version": "1.0.0",
            "description": "The domain events of the a4co marketplace on NATS JetStream. "
            "Generated by `make catalog` from proto/; do not edit.",
        },
        "defaultContentType": "application/protobuf",
        "servers": {"local": {"host": "localhost:4222", "protocol": "nats"}},
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": dict(sorted(schemas.items())),
            "messageTraits": {
                "cloudEventsNats": {
                    "headers": {
                        "type": "object",
                        "properties": {
                            k: {"type": "string", "description": v} for k, v in CE_HEADERS.items()
                        },
                    }
                }
            },
        },
    }


def write_catalog(proto_root: Path, out: Path) -> list[Path]:
    """Write both catalog files into `out` and return their paths."""
    registry = load_registry()
    comments = Comments(build_descriptor_set(proto_root))
    consumers = discover_consumers(registry)
    out.mkdir(parents=True, exist_ok=True)
    md, api = out / "events.md", out / "asyncapi.yaml"
    md.write_text(render_markdown(registry, comments, consumers), encoding="utf-8")
    document = render_asyncapi(registry, comments, consumers)
    api.write_text(
        "# Generated by `make catalog` from proto/; do not edit.\n"
        + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100),
        encoding="utf-8",
    )
    return [md, api]


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: `python -m tools.catalog --proto proto --out docs`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--proto", type=Path, default=Path("proto"))
    parser.add_argument("--out", type=Path, default=Path("docs"))
    ns = parser.parse_args(argv)
    for path in write_catalog(ns.proto, ns.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
