"""Server reflection, as `grpc.reflection.v1` and `v1alpha`, that serves the contracts with their
comments.

grpcio-reflection answers with each file as the running code's descriptor pool holds it, and the
pool keeps no comments (upb drops the source info), so `grpcurl describe` would show the contracts
bare. `make gen` writes every contract's descriptor with its comments beside the generated
modules (`a4co/contracts.binpb`); a file is served from there when, but for its comments, it is
the pool's own, and from the pool otherwise (a stale `contracts.binpb` loses the comments, never
misplaces them).

grpcio-reflection 1.85 has only `v1alpha`, which gRPC deprecates; the servers of grpc-go and
grpc-java serve `v1` as well, and newer clients ask for it first. The two are the same protocol
under another package, field for field, so the same servicer answers both.
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
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

CONTRACTS = Path(str(resources.files("a4co") / "contracts.binpb"))
V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"


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


def v1_file() -> descriptor_pb2.FileDescriptorProto:
    """`grpc/reflection/v1/reflection.proto`: v1alpha's file under v1's name and package."""
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    alpha = f".{file.package}."
    file.name, file.package = V1_FILE, V1_PACKAGE
    file.options.ClearField("deprecated")  # v1alpha is; v1 is not
    file.options.java_package = "io.grpc.reflection.v1"
    file.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    for field in [f for message in file.message_type for f in message.field]:
        if field.type_name.startswith(alpha):  # a message field; a scalar's stays unset
            field.type_name = field.type_name.replace(alpha, f".{V1_PACKAGE}.", 1)
    for method in [m for service in file.service for m in service.method]:
        method.input_type = method.input_type.replace(alpha, f".{V1_PACKAGE}.", 1)
        method.output_type = method.output_type.replace(alpha, f".{V1_PACKAGE}.", 1)
    return file


def _declare_v1(pool: descriptor_pool.DescriptorPool) -> None:
    """Put reflection v1 in `pool`, once, so that reflection describes itself under both names."""
    try:
        pool.FindFileByName(V1_FILE)
    except KeyError:
        pool.AddSerializedFile(v1_file().SerializeToString())


def add_reflection(
    server: grpc.aio.Server, service_names: Iterable[str], comments: Comments | None = None
) -> None:
    """Serve reflection (`grpc.reflection.v1.ServerReflection` and `…v1alpha…`) for
    `service_names` and itself, the contracts with their comments."""
    default = descriptor_pool.Default()
    _declare_v1(default)
    pool = _Pool(default, comments or Comments())
    servicer = reflection.aio.ReflectionServicer(
        [*service_names, V1_SERVICE_NAME, reflection.SERVICE_NAME],
        pool=cast(descriptor_pool.DescriptorPool, pool),
    )
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    # v1: the same servicer, its messages read and written as v1alpha's (the same on the wire).
    info = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    v1 = grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {"ServerReflectionInfo": info})
    server.add_generic_rpc_handlers((v1,))
