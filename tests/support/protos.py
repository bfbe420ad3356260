"""Build fully populated protobuf messages from their descriptors, for round-trip tests."""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_SCALAR_SAMPLES: dict[int, object] = {
    FieldDescriptor.TYPE_DOUBLE: 37.7796,
    FieldDescriptor.TYPE_FLOAT: 1.5,
    FieldDescriptor.TYPE_INT64: 1234,
    FieldDescriptor.TYPE_UINT64: 99,
    FieldDescriptor.TYPE_INT32: 7,
    FieldDescriptor.TYPE_UINT32: 3,
    FieldDescriptor.TYPE_SINT32: -2,
    FieldDescriptor.TYPE_SINT64: -5,
    FieldDescriptor.TYPE_BOOL: True,
    FieldDescriptor.TYPE_BYTES: b"\x00\x01",
}


def _sample(field: Any) -> object:
    if field.enum_type is not None:
        return field.enum_type.values[-1].number
    if field.type == FieldDescriptor.TYPE_STRING:
        return f"{field.name}-ñ-Úbeda"
    return _SCALAR_SAMPLES[field.type]


def populate(message: Message, depth: int = 0) -> Message:
    """Set every field of `message` (and of its sub-messages, a few levels deep) to a sample."""
    for field in message.DESCRIPTOR.fields:
        if field.containing_oneof is not None and message.WhichOneof(field.containing_oneof.name):
            continue
        if field.message_type is not None:
            if depth > 3 or field.message_type.full_name == "google.protobuf.Any":
                continue
            if field.message_type.full_name == "google.protobuf.Timestamp":
                sub = (
                    getattr(message, field.name).add() if field.is_repeated else getattr(message, field.name)
                )
                sub.FromSeconds(1_767_225_600)
                continue
            target = getattr(message, field.name)
            populate(target.add() if field.is_repeated else target, depth + 1)
        elif field.is_repeated:
            getattr(message, field.name).append(_sample(field))
        else:
            setattr(message, field.name, _sample(field))
    return message
