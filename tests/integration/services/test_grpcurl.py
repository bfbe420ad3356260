"""The five synchronous services driven with the real grpcurl, as another team would debug them.

The same commands are shown in the README.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from a4co.artisans.events.v1 import artisan_events_pb2
from a4co.type.v1 import lat_lng_pb2, money_pb2
from tests.integration.services.harness import (
    RunningService,
    publish_event,
)
from tests.support.waiting import eventually

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


async def grpcurl(
    address: str,
    *args: str,
    data: dict[str, object] | None = None,
    token: str = "",
    flags: Sequence[str] = ("-plaintext",),
) -> tuple[int, str]:
    """grpcurl on `address`; `flags` say how to reach it (TLS: `-cacert` and the like)."""
    command = [GRPCURL, *flags, "-max-time", "10"]
    if token:
        command += ["-H", f"authorization: Bearer {token}"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    proc = await asyncio.create_subprocess_exec(
        *command, address, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return int(proc.returncode or 0), out.decode()


async def call(address: str, method: str, data: dict[str, object], token: str = "") -> dict[str, object]:
    code, out = await grpcurl(address, method, data=data, token=token)
    assert code == 0, f"{method}: {out}"
    result: dict[str, object] = json.loads(out)
    return result


def plato_verde(artisan_id: str, initial_stock: int = 0) -> artisan_events_pb2.ProductPublished:
    """The green plate of Úbeda the walk-through publishes."""
    return artisan_events_pb2.ProductPublished(
        product_id="plato-verde",
        artisan_id=artisan_id,
        name="Plato de cerámica verde de Úbeda",
        description="Loza vidriada en verde cobre.",
        category="ceramica",
        price=money_pb2.Money(currency_code="EUR", amount_cents=2200),
        initial_stock=initial_stock,
    )


async def test_every_service_lists_describes_and_answers_every_rpc(five: dict[str, RunningService]) -> None:
    addr = {name: svc.address for name, svc in five.items()}
    full = {
        "identity": "a4co.identity.v1.IdentityService",
        "inventory": "a4co.inventory.v1.InventoryService",
        "payments": "a4co.payments.v1.PaymentsService",
        "catalog": "a4co.catalog.v1.CatalogService",
        "geo": "a4co.geo.v1.GeoService",
    }
    for name, service in full.items():
        code, listed = await grpcurl(addr[name], "list")
        assert code == 0, listed
        assert set(listed.split()) == {
            service,
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        code, everything = await grpcurl(addr[name], "describe")  # each listed service, v1 too
        assert code == 0, everything
        assert "service ServerReflection" in everything
        code, described = await grpcurl(addr[name], "describe", service)
        assert code == 0, described
        assert f"service {service.rsplit('.', 1)[1]}" in described
        # with the contract's comments (services/platform/grpc/reflection.py)
        assert f"\n// {service.rsplit('.', 1)[1]} " in described, described
        health = await call(addr[name], "grpc.health.v1.Health/Check", {"service": service})
        assert health == {"status": "SERVING"}

    # identity: sign up an artisan and a customer, log in, and every other RPC.
    ident = f"{full['identity']}"
    artisan = await call(
        addr["identity"],
        f"{ident}/Register",
        {
            "email": "tito@ubeda.es",
            "password": "barro-verde-2026",
            "display_name": "Alfarería Tito",
            "role": "ROLE_ARTISAN",
        },
    )
    artisan_id = str(artisan["user"]["user_id"])  # type: ignore[index]
    assert artisan["tokens"]["access_token"]  # type: ignore[index]  # signed in by the sign-up
    await call(
        addr["identity"],
        f"{ident}/Register",
        {
            "email": "ana@jaen.es",
            "password": "aceite-2026-jaen",
            "display_name": "Ana",
            "role": "ROLE_CUSTOMER",
        },
    )
    artisan_login = await call(
        addr["identity"], f"{ident}/Login", {"email": "tito@ubeda.es", "password": "barro-verde-2026"}
    )
    artisan_token = str(artisan_login["tokens"]["access_token"])  # type: ignore[index]
    customer_login = await call(
        addr["identity"], f"{ident}/Login", {"email": "ana@jaen.es", "password": "aceite-2026-jaen"}
    )
    customer_token = str(customer_login["tokens"]["access_token"])  # type: ignore[index]
    valid = await call(addr["identity"], f"{ident}/ValidateToken", {"access_token": artisan_token})
    assert valid["role"] == "ROLE_ARTISAN"
    profile = await call(addr["identity"], f"{ident}/GetProfile", {}, token=customer_token)
    assert profile["user"]["email"] == "ana@jaen.es"  # type: ignore[index]
    updated = await call(
        addr["identity"],
        f"{ident}/UpdateProfile",
        {"user": {"bio": "Me encanta el aceite."}, "update_mask": {"paths": ["bio"]}},
        token=customer_token,
    )
    assert updated["user"]["bio"] == "Me encanta el aceite."  # type: ignore[index]
    refreshed = await call(
        addr["identity"],
        f"{ident}/RefreshToken",
        {"refresh_token": customer_login["tokens"]["refresh_token"]},  # type: ignore[index]
    )
    assert refreshed["tokens"]["access_token"]  # type: ignore[index]

    # The artisan's workshop and product arrive as events, as artisans would publish them.
    for svc in (five["geo"], five["catalog"]):
        await publish_event(
            svc,
            artisan_events_pb2.ArtisanOnboarded(
                artisan_id=artisan_id,
                display_name="Alfarería Tito",
                craft="ceramica",
                locality="Úbeda",
                location=lat_lng_pb2.LatLng(latitude=38.0133, longitude=-3.3706),
            ),
            artisan_id,
            source="artisans",
        )
    await publish_event(
        five["inventory"],
        plato_verde(artisan_id, initial_stock=6),
        "plato-verde",
        source="artisans",
    )

    # inventory
    inv = full["inventory"]

    async def stocked() -> bool:
        code, _ = await grpcurl(addr["inventory"], f"{inv}/GetStock", data={"product_id": "plato-verde"})
        return code == 0

    await eventually(stocked, what="stock for the published product")
    check = await call(
        addr["inventory"], f"{inv}/CheckStock", {"lines": [{"product_id": "plato-verde", "quantity": 2}]}
    )
    assert check["all_available"] is True
    adjusted = await call(
        addr["inventory"],
        f"{inv}/AdjustStock",
        {
            "request_id": "9b2f7d1e-0c1a-4b8e-9a55-3f0f1f4f2a10",
            "product_id": "plato-verde",
            "delta": 4,
            "reason": "horneada",
        },
        token=artisan_token,
    )
    assert adjusted["stock"]["on_hand"] == 10  # type: ignore[index]

    # payments
    pay = full["payments"]
    method = await call(
        addr["payments"],
        f"{pay}/ValidatePaymentMethod",
        {"card": {"number": "4242 4242 4242 4242", "exp_month": 12, "exp_year": 2031, "cvc": "123"}},
        token=customer_token,
    )
    assert method["valid"] is True
    assert method["last_four"] == "4242"
    code, out = await grpcurl(
        addr["payments"], f"{pay}/GetPayment", data={"order_id": "none"}, token=customer_token
    )
    assert code != 0
    assert "NotFound" in out
    assert "PAYMENT_NOT_FOUND" in out, "ErrorInfo details are visible to grpcurl"

    # catalog: the product reaches it through inventory's and artisans' events.
    await publish_event(
        five["catalog"],
        plato_verde(artisan_id),
        "plato-verde",
        source="artisans",
    )
    cat = full["catalog"]

    async def searchable() -> bool:
        found = await call(addr["catalog"], f"{cat}/SearchProducts", {"query": "ceramica verde"})
        return bool(found.get("results"))

    await eventually(searchable, what="the product searchable")
    product = await call(addr["catalog"], f"{cat}/GetProduct", {"product_id": "plato-verde"})
    assert product["product"]["locality"] == "Úbeda"  # type: ignore[index]
    near = await call(
        addr["catalog"],
        f"{cat}/SearchProducts",
        {"near": {"latitude": 38.0133, "longitude": -3.3706}, "radius_km": 10, "page_size": 5},
    )  # no words: nearest first
    results: list[dict[str, dict[str, str]]] = near["results"]  # type: ignore[assignment]
    assert [r["product"]["product_id"] for r in results] == ["plato-verde"]
    assert near["total_size"] == 1

    # geo
    geo = full["geo"]

    async def mapped() -> bool:
        found = await call(
            addr["geo"],
            f"{geo}/FindNearbyArtisans",
            {"location": {"latitude": 38.0, "longitude": -3.37}, "radius_km": 10},
        )
        return bool(found.get("artisans"))

    await eventually(mapped, what="the workshop on the map")
    quote = await call(
        addr["geo"],
        f"{geo}/QuoteDelivery",
        {"artisan_id": artisan_id, "destination": {"latitude": 37.9938, "longitude": -3.47}},
    )
    assert quote["zone"] == "local"

    # Logout, and the token is refused by another service that verifies it locally (it learns the
    # revocation from identity's announcement, though it had already accepted this token).
    await call(addr["identity"], f"{ident}/Logout", {}, token=artisan_token)
    code, out = await grpcurl(
        addr["inventory"],
        f"{inv}/AdjustStock",
        data={"request_id": "3c8f8e4e-52c2-4a8f-8d1f-6b4b8d7b9a01", "product_id": "plato-verde", "delta": 1},
        token=artisan_token,
    )
    assert code != 0
    assert "Unauthenticated" in out
    assert "TOKEN_REVOKED" in out
