"""identity's protobuf messages <-> domain objects."""

from __future__ import annotations

from a4co.identity.v1 import identity_service_pb2 as pb
from a4co.type.v1 import address_pb2
from services.identity.domain import Address, User
from services.identity.handlers import Tokens
from services.platform.auth import Role
from services.platform.timestamps import to_timestamp

ROLE_TO_PB = {
    Role.CUSTOMER: pb.ROLE_CUSTOMER,
    Role.ARTISAN: pb.ROLE_ARTISAN,
    Role.ADMIN: pb.ROLE_ADMIN,
}
ROLE_FROM_PB = {v: k for k, v in ROLE_TO_PB.items()}


def address_from_pb(message: address_pb2.Address) -> Address:
    """The domain address of a message."""
    return Address(
        street=message.street,
        locality=message.locality,
        province=message.province,
        postal_code=message.postal_code,
        country_code=message.country_code,
    )


def address_to_pb(address: Address) -> address_pb2.Address:
    """The message of a domain address."""
    return address_pb2.Address(
        street=address.street,
        locality=address.locality,
        province=address.province,
        postal_code=address.postal_code,
        country_code=address.country_code,
    )


def user_to_pb(user: User) -> pb.User:
    """A user's private profile as a message (never the password hash)."""
    return pb.User(
        user_id=user.user_id,
        email=user.email,
        display_name=user.display_name,
        role=ROLE_TO_PB[user.role],
        phone_number=user.phone_number,
        address=address_to_pb(user.address),
        bio=user.bio,
        create_time=to_timestamp(user.created_at),
        update_time=to_timestamp(user.updated_at),
    )


def changes_from_pb(message: pb.User) -> User:
    """The editable fields of an UpdateProfile request, as a partial user."""
    return User(
        user_id=message.user_id,
        email="",
        display_name=message.display_name,
        role=Role.CUSTOMER,
        password_hash="",
        phone_number=message.phone_number,
        address=address_from_pb(message.address),
        bio=message.bio,
    )


def tokens_to_pb(tokens: Tokens) -> pb.TokenPair:
    """A token pair as a message."""
    return pb.TokenPair(
        access_token=tokens.access_token,
        access_token_expire_time=to_timestamp(tokens.access_expires_at),
        refresh_token=tokens.refresh_token,
        refresh_token_expire_time=to_timestamp(tokens.refresh_expires_at),
    )
