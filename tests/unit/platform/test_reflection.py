"""Which comments reflection adds to a file: the contracts' own, and only to the very file they
were written for."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection_pb2

from a4co.inventory.v1 import inventory_service_pb2
from services.platform.grpc.reflection import CONTRACTS, Comments, v1_file

INVENTORY_FILE = "a4co/inventory/v1/inventory_service.proto"


def served(comments: Comments, file: FileDescriptor) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    comments.copy(file, proto)
    return proto


def bare(file: FileDescriptor) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    return proto


def contracts_with(path: Path, change: str) -> Path:
    """The generated contracts, with the inventory file changed as `change` says."""
    contracts = descriptor_pb2.FileDescriptorSet.FromString(CONTRACTS.read_bytes())
    (inventory,) = [f for f in contracts.file if f.name == INVENTORY_FILE]
    if change == "a field more":
        inventory.message_type[0].field.add(name="added_since", number=99, type=9, label=1)
    else:
        contracts.file.remove(inventory)
    path.write_bytes(contracts.SerializeToString())
    return path


def test_the_generated_contracts_give_a_file_its_comments() -> None:
    file = inventory_service_pb2.DESCRIPTOR
    proto = served(Comments(), file)
    comments = {tuple(loc.path): loc.leading_comments for loc in proto.source_code_info.location}
    assert comments[(6, 0)].startswith(" InventoryService answers")
    proto.ClearField("source_code_info")
    assert proto == bare(file)  # nothing else is changed


def test_comments_written_for_another_version_of_a_file_are_left_out(tmp_path: Path) -> None:
    comments = Comments(contracts_with(tmp_path / "stale.binpb", "a field more"))
    file = inventory_service_pb2.DESCRIPTOR
    assert served(comments, file) == bare(file)
    assert served(comments, file) == bare(file)  # and again, from what was checked


def test_a_file_the_contracts_do_not_hold_is_served_as_it_is(tmp_path: Path) -> None:
    file = inventory_service_pb2.DESCRIPTOR
    assert served(Comments(contracts_with(tmp_path / "without.binpb", "no inventory")), file) == bare(file)
    assert served(Comments(tmp_path / "missing.binpb"), file) == bare(file)
    timestamp = descriptor_pool.Default().FindFileByName("google/protobuf/timestamp.proto")
    assert served(Comments(), timestamp) == bare(timestamp)


def test_reflection_v1_is_v1alpha_under_its_own_package() -> None:
    """Field for field the same messages (so one servicer answers both), every type named in v1."""
    v1 = v1_file()
    alpha = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(alpha)
    assert (v1.name, v1.package) == ("grpc/reflection/v1/reflection.proto", "grpc.reflection.v1")
    assert "v1alpha" not in str(v1)
    assert not v1.options.deprecated
    fields = {m.name: [(f.name, f.number, f.type) for f in m.field] for m in v1.message_type}
    assert fields == {m.name: [(f.name, f.number, f.type) for f in m.field] for m in alpha.message_type}
    assert fields["ServerReflectionRequest"][1:] == [
        ("file_by_filename", 3, 9),
        ("file_containing_symbol", 4, 9),
        ("file_containing_extension", 5, 11),
        ("all_extension_numbers_of_type", 6, 9),
        ("list_services", 7, 9),
    ]
