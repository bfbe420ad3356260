"""Compile the contracts into a FileDescriptorSet that keeps the comments (source info)."""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc


def proto_files(proto_root: Path) -> list[Path]:
    """Every .proto file under proto_root, in a stable order."""
    return sorted(proto_root.rglob("*.proto"))


def protoc_include() -> Path:
    """The directory of the well-known types bundled with grpcio-tools."""
    return Path(str(resources.files("grpc_tools") / "_proto"))


def build_descriptor_set(proto_root: Path) -> descriptor_pb2.FileDescriptorSet:
    """Compile every contract, with imports and comments, into one descriptor set."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.binpb"
        args = [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"-I{protoc_include()}",
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *[str(f.relative_to(proto_root)) for f in proto_files(proto_root)],
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc could not compile {proto_root}")
        fds = descriptor_pb2.FileDescriptorSet()
        fds.ParseFromString(out.read_bytes())
    return fds
