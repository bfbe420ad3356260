"""Regenerate the Python code of the contracts: messages, gRPC stubs and typed stubs, and the
contracts' descriptors with their comments, which the services serve by reflection.

Runs protoc from grpcio-tools with the mypy-protobuf plugins, so nothing comes from the network.
The output directory is rebuilt from scratch, so a removed .proto leaves no stale module behind.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from tools.protoset import proto_files, protoc_include

# Beside the generated package: every contract's FileDescriptorProto with its comments (source
# info), which the generated modules' descriptors leave out (services/platform/grpc/reflection.py).
CONTRACTS = "contracts.binpb"


def generate(proto_root: Path, out: Path) -> None:
    """Write `*_pb2.py`, `*_pb2_grpc.py` and their `.pyi` stubs for every file under proto_root,
    and `a4co/contracts.binpb`."""
    files = proto_files(proto_root)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    descriptors = out / CONTRACTS
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{protoc_include()}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet:{out}",
        "--include_source_info",
        f"--descriptor_set_out={descriptors}",
        *[str(f.relative_to(proto_root)) for f in files],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for directory in sorted(p for p in out.rglob("*") if p.is_dir()):
        (directory / "__init__.py").touch()
    (out / "a4co" / "py.typed").write_text("")
    contracts = descriptor_pb2.FileDescriptorSet.FromString(descriptors.read_bytes())
    descriptors.unlink()
    for file in contracts.file:
        _drop_json_names(file)
    (out / "a4co" / CONTRACTS).write_bytes(contracts.SerializeToString(deterministic=True))


def _drop_json_names(file: descriptor_pb2.FileDescriptorProto) -> None:
    """Leave out the fields' JSON names, as the generated modules' descriptors do, so that each
    file is theirs but for its comments (every client derives the same names from the fields')."""
    messages = list(file.message_type)
    for field in file.extension:
        field.ClearField("json_name")
    while messages:
        message = messages.pop()
        for field in [*message.field, *message.extension]:
            field.ClearField("json_name")
        messages.extend(message.nested_type)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: `python -m tools.gen --proto proto --out gen/python`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--proto", type=Path, default=Path("proto"))
    parser.add_argument("--out", type=Path, default=Path("gen/python"))
    ns = parser.parse_args(argv)
    generate(ns.proto, ns.out)
    print(f"generated {sum(1 for _ in ns.out.rglob('*.py'))} modules in {ns.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
