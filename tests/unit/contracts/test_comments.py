"""Every message, field, enum, value, service and RPC of the contracts carries a sentence."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from tools.protoset import build_descriptor_set

PROTO = Path(__file__).resolve().parents[3] / "proto"
# SourceCodeInfo paths: message 4, its field 2; enum 5, its value 2; service 6, its method 2.
MESSAGE, ENUM, SERVICE, CHILD = 4, 5, 6, 2


def elements(file: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[str, tuple[int, ...]]]:
    for i, m in enumerate(file.message_type):
        yield f"message {m.name}", (MESSAGE, i)
        for j, f in enumerate(m.field):
            yield f"field {m.name}.{f.name}", (MESSAGE, i, CHILD, j)
    for i, e in enumerate(file.enum_type):
        yield f"enum {e.name}", (ENUM, i)
        for j, v in enumerate(e.value):
            yield f"value {v.name}", (ENUM, i, CHILD, j)
    for i, s in enumerate(file.service):
        yield f"service {s.name}", (SERVICE, i)
        for j, r in enumerate(s.method):
            yield f"rpc {s.name}.{r.name}", (SERVICE, i, CHILD, j)


def is_sentence(what: str, text: str) -> bool:
    """Two words or more ending in a full stop; capitalised, except where a field or value
    comment opens with a code name such as `subtotal + delivery_fee`."""
    capital_required = not what.startswith(("field", "value"))
    return text.endswith(".") and len(text.split()) >= 2 and (text[0].isupper() or not capital_required)


def own_files() -> list[descriptor_pb2.FileDescriptorProto]:
    return [f for f in build_descriptor_set(PROTO).file if f.package.startswith("a4co.")]


@pytest.mark.parametrize("file", own_files(), ids=lambda f: f.name)
def test_every_element_has_a_full_sentence_comment(
    file: descriptor_pb2.FileDescriptorProto,
) -> None:
    comments = {tuple(loc.path): loc.leading_comments.strip() for loc in file.source_code_info.location}
    missing, not_sentences = [], []
    for what, path in elements(file):
        text = comments.get(path, "")
        if not text:
            missing.append(what)
        elif not is_sentence(what, text):
            not_sentences.append(f"{what}: {text!r}")
    assert missing == [], f"no comment on {missing}"
    assert not_sentences == [], f"not a sentence: {not_sentences}"
