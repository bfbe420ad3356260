"""Every string of every request is bounded: walked from the services' descriptors, each string
field set far too long, or holding a NUL (which PostgreSQL's text cannot), one field at a time, is
refused by the method's validator, naming it.

What one request can make a service store or publish must stay small: a sign-up whose locality
was 1.5 MB once made an event that NATS refused, and it held every later identity event in the
outbox (tests/integration/services/identity). gRPC refuses any request over 64 KiB before this.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import symbol_database
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from services.identity.domain import Address, User, apply_profile_update, check_signup
from services.platform.auth import Role
from services.platform.errors import InvalidArgumentError
from services.platform.grpc.interceptor import MethodPolicy

SERVICES = (
    "analytics", "artisans", "catalog", "cms", "geo", "identity",
    "inventory", "loyalty", "notifications", "orders", "payments",
)  # fmt: skip
LONG = "x" * 5000
NUL = "Ana\x00Mal"
# Checked past the interceptor, where the rules of the domain are: identity's sign-up
# (`check_signup`) and profile updates (`apply_profile_update`), both tested below. An update
# changes only the fields its mask names, and never the user's id nor e-mail address.
CHECKED_BY_THE_DOMAIN = {"/a4co.identity.v1.IdentityService/Register"}
NEVER_READ = {("/a4co.identity.v1.IdentityService/UpdateProfile", f) for f in ("user.user_id", "user.email")}
# A product's or a workshop's update reads the fields its mask names (each set here with its field
# named), never the ids, which the request names apart or the caller's token gives.
UPDATE_PRODUCT = "/a4co.artisans.v1.ArtisansService/UpdateProduct"
UPDATE_ARTISAN = "/a4co.artisans.v1.ArtisansService/UpdateArtisan"
MASKED = {UPDATE_PRODUCT: "product.", UPDATE_ARTISAN: "artisan."}
NEVER_READ |= {(UPDATE_PRODUCT, f) for f in ("product.product_id", "product.artisan_id")}
NEVER_READ |= {(UPDATE_ARTISAN, "artisan.artisan_id")}
DOMAIN_PROFILE_FIELDS = {"user.display_name", "user.phone_number", "user.bio"}


def _strings(message: Descriptor, prefix: str = "") -> Iterator[tuple[str, list[FieldDescriptor]]]:
    """Every string field under `message`: its path as the violations name it, and the chain."""
    for f in message.fields:
        path = f"{prefix}{f.name}{'[0]' if f.is_repeated else ''}"
        if f.type == FieldDescriptor.TYPE_STRING:
            yield path, [f]
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            inner = f.message_type
            assert inner is not None
            if not inner.full_name.startswith("google."):  # timestamps, masks: no free text
                for sub, chain in _strings(inner, f"{path}."):
                    yield sub, [f, *chain]


def _with(request: Message, chain: list[FieldDescriptor], value: str) -> Message:
    """`request` with the string at the end of `chain` set to `value` (a repeated field's first)."""
    target: Any = request
    for f in chain[:-1]:
        target = getattr(target, f.name).add() if f.is_repeated else getattr(target, f.name)
    last = chain[-1]
    if last.is_repeated:
        getattr(target, last.name).append(value)
    else:
        setattr(target, last.name, value)
    return request


def cases() -> list[tuple[str, str, MethodPolicy, MethodDescriptor, list[FieldDescriptor]]]:
    found = []
    for service in SERVICES:
        api = importlib.import_module(f"services.{service}.grpc_api")
        descriptor = api.pb.DESCRIPTOR.services_by_name[api.SERVICE.rsplit(".", 1)[1]]
        for method in descriptor.methods:
            name = f"/{api.SERVICE}/{method.name}"
            for path, chain in _strings(method.input_type):
                if name in CHECKED_BY_THE_DOMAIN or (name, path) in NEVER_READ:
                    continue
                if path in DOMAIN_PROFILE_FIELDS or path.startswith("user.address."):
                    continue
                found.append((name, path, api.POLICIES[name], method, chain))
    return found


def test_the_walk_finds_the_strings_of_every_service() -> None:
    paths = {(name.rsplit("/", 1)[1], path) for name, path, *_ in cases()}
    assert len(paths) > 40
    assert ("CreateOrder", "delivery_address.country_code") in paths
    assert ("CheckStock", "lines[0].product_id") in paths
    assert ("ValidatePaymentMethod", "card.holder_name") in paths


@pytest.mark.parametrize(
    ("name", "path", "policy", "method", "chain"),
    cases(),
    ids=[f"{name.rsplit('/', 1)[1]}-{path}" for name, path, *_ in cases()],
)
def test_a_string_far_too_long_or_with_a_nul_is_refused_naming_its_field(
    name: str, path: str, policy: MethodPolicy, method: MethodDescriptor, chain: list[FieldDescriptor]
) -> None:
    request_class = symbol_database.Default().GetSymbol(method.input_type.full_name)
    assert policy.validator is not None, f"{name} has a string ({path}) and no validator"
    for bad in (LONG, NUL):
        request: Any = _with(request_class(), chain, bad)
        if name in MASKED and path.startswith(MASKED[name]):
            request.update_mask.paths.append(path.split(".")[1])
        with pytest.raises(InvalidArgumentError) as refused:
            policy.validator(request)
        assert path in {v.field for v in refused.value.violations}, (bad[:10], refused.value.violations)


def test_sign_ups_and_profile_updates_bound_every_field_they_keep() -> None:
    long_address = Address(*(LONG,) * 5)
    every = {
        "email", "password", "display_name", "phone_number", "address.street", "address.locality",
        "address.province", "address.postal_code", "address.country_code",
    }  # fmt: skip
    with pytest.raises(InvalidArgumentError) as signup:
        check_signup(f"{LONG}@example.es", LONG, LONG, Role.CUSTOMER, LONG, long_address)
    assert {v.field for v in signup.value.violations} == every
    with pytest.raises(InvalidArgumentError) as nul:
        check_signup(f"{NUL}@example.es", f"{NUL}-aceite", NUL, Role.CUSTOMER, NUL, Address(*(NUL,) * 5))
    assert {v.field for v in nul.value.violations} == every

    user = User("u-1", "ana@example.es", "Ana", Role.CUSTOMER, "hash")
    profile = {
        "user.display_name", "user.phone_number", "user.bio", "user.address.street", "user.address.locality",
        "user.address.province", "user.address.postal_code", "user.address.country_code",
    }  # fmt: skip
    for bad in (LONG, NUL):
        changes = User(
            "u-1", bad, bad, Role.CUSTOMER, "", phone_number=bad, address=Address(*(bad,) * 5), bio=bad
        )
        with pytest.raises(InvalidArgumentError) as update:
            apply_profile_update(user, changes, ["display_name", "phone_number", "address", "bio"])
        assert {v.field for v in update.value.violations} == profile
