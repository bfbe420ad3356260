"""Regenerate the Python code of the contracts: messages, gRPC stubs and typed stubs.

Runs protoc from grpcio-tools with the mypy-protobuf plugins, so nothing comes from the network.
The output directory is rebuilt from scratch, so a removed .proto leaves no stale module behind.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

from tools.protoset import proto_files, protoc_include


def generate(proto_root: Path, out: Path) -> None:
    """Write `*_pb2.py`, `*_pb2_grpc.py` and their `.pyi` stubs for every file under proto_root."""
    files = proto_files(proto_root)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{protoc_include()}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet:{out}",
        *[str(f.relative_to(proto_root)) for f in files],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for directory in sorted(p for p in out.rglob("*") if p.is_dir()):
        (directory / "__init__.py").touch()
    (out / "a4co" / "py.typed").write_text("")


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
