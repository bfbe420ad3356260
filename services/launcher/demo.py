"""Load the demo marketplace of Jaén through the public APIs, once per data directory.

Workshops sign up as artisans, onboard and publish their products; a demo customer signs up with a
card on file. Request ids are derived from the demo keys, so a load interrupted half-way can run
again without publishing anything twice; a marker file records that it finished.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc

from a4co.artisans.v1 import artisans_service_pb2 as artisans_pb
from a4co.artisans.v1 import artisans_service_pb2_grpc as artisans_grpc
from a4co.identity.v1 import identity_service_pb2 as identity_pb
from a4co.identity.v1 import identity_service_pb2_grpc as identity_grpc
from a4co.payments.v1 import payments_service_pb2 as payments_pb
from a4co.payments.v1 import payments_service_pb2_grpc as payments_grpc
from a4co.type.v1 import lat_lng_pb2, money_pb2
from services.demo.catalogue import ARTISANS, DemoArtisan, DemoProduct, products
from services.platform import return_exceptions
from services.platform.grpc import tls

NAMESPACE = uuid.UUID("6f0d6f8e-5b1f-4a4e-9c1d-a4c0a4c0a4c0")
DEMO_PASSWORD = "jaen-demo-2026"  # noqa: S105 - the demo's published password, printed at start
CUSTOMER_EMAIL = "ana@demo.a4co.es"
ADMIN_EMAIL = "admin@demo.a4co.es"  # identity makes it at start (A4CO_ADMIN_EMAIL), unless set otherwise
AT_ONCE = 4  # workshops loaded at a time


@dataclass(frozen=True, slots=True)
class DemoAccounts:
    """What a person needs to try the demo: the customer's login and card."""

    customer_email: str
    password: str
    customer_id: str
    payment_method_id: str


def _request_id(key: str) -> str:
    return str(uuid.uuid5(NAMESPACE, key))


async def _account(
    identity: identity_grpc.IdentityServiceAsyncStub, email: str, name: str, role: identity_pb.Role.ValueType
) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The account's user id and bearer metadata: the session its sign-up starts, or a login's
    when an earlier, interrupted load signed it up already."""
    try:
        signed_in: identity_pb.RegisterResponse | identity_pb.LoginResponse = await identity.Register(
            identity_pb.RegisterRequest(email=email, password=DEMO_PASSWORD, display_name=name, role=role)
        )
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
        signed_in = await identity.Login(identity_pb.LoginRequest(email=email, password=DEMO_PASSWORD))
    return signed_in.user.user_id, (("authorization", f"Bearer {signed_in.tokens.access_token}"),)


async def _artisan(
    identity: identity_grpc.IdentityServiceAsyncStub,
    artisans: artisans_grpc.ArtisansServiceAsyncStub,
    artisan: DemoArtisan,
    catalogue: list[DemoProduct],
) -> None:
    """One workshop: its account, its onboarding and its products, in that order."""
    _, token = await _account(identity, f"{artisan.key}@demo.a4co.es", artisan.name, identity_pb.ROLE_ARTISAN)
    try:
        await artisans.OnboardArtisan(
            artisans_pb.OnboardArtisanRequest(
                request_id=_request_id(f"onboard:{artisan.key}"),
                display_name=artisan.name,
                craft=artisan.craft,
                locality=artisan.town,
                location=lat_lng_pb2.LatLng(latitude=artisan.latitude, longitude=artisan.longitude),
                bio=artisan.bio,
            ),
            metadata=token,
        )
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    for product in (p for p in catalogue if p.artisan_key == artisan.key):
        await artisans.PublishProduct(
            artisans_pb.PublishProductRequest(
                request_id=_request_id(f"publish:{product.key}"),
                name=product.name,
                description=product.description,
                category=product.category,
                price=money_pb2.Money(currency_code="EUR", amount_cents=product.price_cents),
                initial_stock=product.stock,
                low_stock_threshold=product.low_stock_threshold,
                return_exception=return_exceptions.value_of(product.return_exception),
            ),
            metadata=token,
        )


async def load(addresses: dict[str, str], data_dir: Path) -> DemoAccounts:
    """Load the demo unless this data directory has it already; returns the demo accounts.

    Workshops are loaded a few at a time, as they do not depend on each other, and each account
    uses the session its sign-up starts: most of an account's time is identity hashing its
    password (a login would hash it a second time). One after the other, with a login each, the
    demo took about 10 s of `make run`'s start (docs/performance-history.md).
    """
    marker = data_dir / "demo.json"
    if marker.exists():
        return DemoAccounts(**json.loads(marker.read_text()))
    caller = tls.Tls.from_env(os.environ)  # the services' own TLS settings (decision 58)
    channels = {name: tls.channel(addresses[name], caller) for name in ("identity", "artisans", "payments")}
    try:
        identity = identity_grpc.IdentityServiceStub(channels["identity"])
        artisans = artisans_grpc.ArtisansServiceStub(channels["artisans"])
        catalogue = products()
        at_once = asyncio.Semaphore(AT_ONCE)

        async def workshop(artisan: DemoArtisan) -> None:
            async with at_once:
                await _artisan(identity, artisans, artisan, catalogue)

        async with asyncio.TaskGroup() as group:
            for artisan in ARTISANS:
                group.create_task(workshop(artisan))
            customer = group.create_task(
                _account(identity, CUSTOMER_EMAIL, "Ana (demo)", identity_pb.ROLE_CUSTOMER)
            )
        customer_id, token = customer.result()
        card = await payments_grpc.PaymentsServiceStub(channels["payments"]).ValidatePaymentMethod(
            payments_pb.ValidatePaymentMethodRequest(
                card=payments_pb.Card(number="4242424242424242", exp_month=12, exp_year=2031, cvc="123")
            ),
            metadata=token,
        )
    finally:
        for channel in channels.values():
            await channel.close()
    accounts = DemoAccounts(CUSTOMER_EMAIL, DEMO_PASSWORD, customer_id, card.payment_method_id)
    marker.write_text(json.dumps(dataclasses.asdict(accounts), indent=2))
    return accounts
