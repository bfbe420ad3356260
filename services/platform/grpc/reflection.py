"""Server reflection that serves the contracts with their comments.

grpcio-reflection answers with each file as the running code's descriptor pool holds it, and the
pool keeps no comments (upb drops the source info), so `grpcurl describe` would show the contracts
bare. `make gen` writes every contract's descriptor with its comments beside the generated
modules (`a4co/contracts.binpb`); a file is served from there when, but for its comments, it is
the pool's own, and from the pool otherwise (a stale `contracts.binpb` loses the comments, never
misplaces them).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, cast

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

CONTRACTS = Path(str(resources.files("a4co") / "contracts.binpb"))


class Comments:
    """The contracts' comments, read from `path` at the first file asked for."""

    def __init__(self, path: Path = CONTRACTS) -> None:
        self.path = path
        self._checked: dict[str, descriptor_pb2.SourceCodeInfo | None] = {}

    @functools.cached_property
    def _documented(self) -> dict[str, bytes]:
        try:
            contracts = descriptor_pb2.FileDescriptorSet.FromString(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        return {file.name: file.SerializeToString() for file in contracts.file}

    def copy(self, file: FileDescriptor, proto: descriptor_pb2.FileDescriptorProto) -> None:
        """`file` into `proto`, with its comments when they are known to be its own."""
        file.CopyToProto(proto)
        if file.name not in self._checked:
            self._checked[file.name] = self._source_info(file.name, proto)
        source_info = self._checked[file.name]
        if source_info is not None:
            proto.source_code_info.CopyFrom(source_info)

    def _source_info(
        self, name: str, bare: descriptor_pb2.FileDescriptorProto
    ) -> descriptor_pb2.SourceCodeInfo | None:
        serialized = self._documented.get(name)
        if serialized is None:
            return None
        documented = descriptor_pb2.FileDescriptorProto.FromString(serialized)
        source_info = descriptor_pb2.SourceCodeInfo()
        source_info.CopyFrom(documented.source_code_info)
        documented.ClearField("source_code_info")
        return source_info if documented == bare else None


class _File:
    """A file of the pool as grpcio-reflection reads one (its name, its dependencies and
    CopyToProto), copied with its comments."""

    def __init__(self, file: FileDescriptor, comments: Comments) -> None:
        self._file, self._comments = file, comments

    @property
    def name(self) -> str:
        return str(self._file.name)

    @property
    def dependencies(self) -> list[_File]:
        return [_File(dependency, self._comments) for dependency in self._file.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:  # noqa: N802
        self._comments.copy(self._file, proto)


class _Pool:
    """The descriptor pool, whose files grpcio-reflection finds come with their comments."""

    def __init__(self, pool: descriptor_pool.DescriptorPool, comments: Comments) -> None:
        self._pool, self._comments = pool, comments

    def FindFileByName(self, name: str) -> _File:  # noqa: N802
        return _File(self._pool.FindFileByName(name), self._comments)

    def FindFileContainingSymbol(self, symbol: str) -> _File:  # noqa: N802
        return _File(self._pool.FindFileContainingSymbol(symbol), self._comments)

    def __getattr__(self, name: str) -> Any:  # the look-ups of messages and extensions
        return getattr(self._pool, name)


def add_reflection(
    server: grpc.aio.Server, service_names: Iterable[str], comments: Comments | None = None
) -> None:
    """Serve reflection (`grpc.reflection.v1alpha.ServerReflection`) for `service_names` and
    itself, the contracts with their comments."""
    pool = _Pool(descriptor_pool.Default(), comments or Comments())
    servicer = reflection.aio.ReflectionServicer(
        [*service_names, reflection.SERVICE_NAME], pool=cast(descriptor_pool.DescriptorPool, pool)
    )
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
