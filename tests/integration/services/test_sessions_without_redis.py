"""While Redis fails, an authenticated call is still checked against the sessions that ended:
identity reads its own table, and the other services ask identity's ValidateToken (decision 34)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from redis.asyncio import Redis

from a4co.identity.v1 import identity_service_pb2 as identity_pb
from a4co.identity.v1 import identity_service_pb2_grpc as identity_grpc
from a4co.payments.v1 import payments_service_pb2 as payments_pb
from a4co.payments.v1 import payments_service_pb2_grpc as payments_grpc
from services.identity.__main__ import build as build_identity
from services.payments.__main__ import build as build_payments
from services.platform.auth import Role
from services.platform.grpc.status import details_of
from services.platform.local_servers import LocalServers, ServerUrls
from tests.integration.services.harness import Keys, RunningService, bearer, running_service, settings_for
from tests.support.rpc import failure
from tests.support.servers import REDIS_FAILURES, redis_failing, stoppable, stopped
from tests.support.waiting import eventually

PASSWORD = "aceite-de-jaen-2026"
CARD = payments_pb.ValidatePaymentMethodRequest(
    card=payments_pb.Card(number="4242424242424242", exp_month=12, exp_year=2031, cvc="123")
)


async def sign_up(stub: identity_grpc.IdentityServiceAsyncStub, email: str) -> str:
    request = identity_pb.RegisterRequest(
        email=email, password=PASSWORD, display_name="María", role=identity_pb.ROLE_CUSTOMER
    )
    return (await stub.Register(request)).tokens.access_token


def reason(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    return error.code(), details_of(error)[0].reason  # type: ignore[union-attr]


@dataclass
class Pair:
    """identity, and payments asking it while Redis fails."""

    identity: RunningService
    accounts: identity_grpc.IdentityServiceAsyncStub
    cards: payments_grpc.PaymentsServiceAsyncStub


@contextlib.asynccontextmanager
async def identity_and_payments(urls: ServerUrls, prefix: str, keys: Keys) -> AsyncIterator[Pair]:
    identity_settings = settings_for("identity", urls, prefix, keys)
    async with running_service(
        "identity", build_identity, Path("services/identity/schema.sql"), identity_settings
    ) as identity:
        payments_settings = settings_for("payments", urls, prefix, keys, {"identity": identity.address})
        async with running_service(
            "payments", build_payments, Path("services/payments/schema.sql"), payments_settings
        ) as payments:
            yield Pair(
                identity,
                identity_grpc.IdentityServiceStub(identity.channel),
                payments_grpc.PaymentsServiceStub(payments.channel),
            )


async def test_ended_sessions_are_refused_and_live_ones_served_while_redis_fails(
    urls: ServerUrls, prefix: str, keys: Keys, local_servers: LocalServers
) -> None:
    redis = stoppable(local_servers, "redis")
    async with identity_and_payments(urls, prefix, keys) as pair:
        accounts, cards = pair.accounts, pair.cards
        live = await sign_up(accounts, "ana@example.es")
        ended = await sign_up(accounts, "luis@example.es")
        await accounts.Logout(identity_pb.LogoutRequest(), metadata=bearer(ended))

        with stopped(redis):
            # identity answers from its sessions table.
            profile = await accounts.GetProfile(identity_pb.GetProfileRequest(), metadata=bearer(live))
            assert profile.user.email == "ana@example.es"
            refused = await failure(
                accounts.GetProfile(identity_pb.GetProfileRequest(), metadata=bearer(ended))
            )
            assert reason(refused) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
            # payments asks identity.
            assert (await cards.ValidatePaymentMethod(CARD, metadata=bearer(live))).valid
            refused = await failure(cards.ValidatePaymentMethod(CARD, metadata=bearer(ended)))
            assert reason(refused) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")


async def test_without_identity_to_ask_a_call_is_unavailable_while_redis_fails(
    urls: ServerUrls, prefix: str, keys: Keys, local_servers: LocalServers
) -> None:
    redis = stoppable(local_servers, "redis")
    token = keys.issuer().issue("c-1", Role.CUSTOMER, str(uuid.uuid4()))[0]
    settings = settings_for("payments", urls, prefix, keys)  # no A4CO_PEER_IDENTITY
    async with running_service(
        "payments", build_payments, Path("services/payments/schema.sql"), settings
    ) as payments:
        cards = payments_grpc.PaymentsServiceStub(payments.channel)
        with stopped(redis):
            refused = await failure(cards.ValidatePaymentMethod(CARD, metadata=bearer(token)))
    assert reason(refused) == (grpc.StatusCode.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE")


async def test_a_logout_while_redis_fails_is_honoured_then_and_after(
    urls: ServerUrls, prefix: str, keys: Keys, local_servers: LocalServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Logout answers OK while Redis fails: the session's end is recorded in identity's table, which
    the services ask meanwhile, and written to Redis once it answers (`record_lost_revocations`)."""
    redis = stoppable(local_servers, "redis")
    monkeypatch.setenv("A4CO_REVOCATIONS_CHECK_S", "0.2")
    async with identity_and_payments(urls, prefix, keys) as pair:
        accounts, cards, identity = pair.accounts, pair.cards, pair.identity
        token = await sign_up(accounts, "eva@example.es")
        with stopped(redis):
            await accounts.Logout(identity_pb.LogoutRequest(), metadata=bearer(token))
            refused = await failure(cards.ValidatePaymentMethod(CARD, metadata=bearer(token)))
            assert reason(refused) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
        # Redis came back empty: the revocation is written to it again from identity's table.

        async def recorded() -> bool:
            key = f"{prefix}:a4co:revoked:*"
            return bool([k async for k in identity.infra.redis.scan_iter(key)])

        await eventually(recorded, timeout=20, what="the revocation written to Redis")
        refused = await failure(cards.ValidatePaymentMethod(CARD, metadata=bearer(token)))
        assert reason(refused) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")


@pytest.mark.parametrize("how", [h for h in REDIS_FAILURES if h != "stopped"])
async def test_a_logout_while_redis_refuses_writes_is_honoured_once_it_takes_them(
    urls: ServerUrls,
    prefix: str,
    keys: Keys,
    local_servers: LocalServers,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    """Redis full, or a replica: Logout still answers OK, its session's end recorded in identity's
    table and announced, so that every service refuses its tokens at once, though Redis answers
    their reads without it; it is written to Redis once Redis takes writes."""
    monkeypatch.setenv("A4CO_REVOCATIONS_CHECK_S", "0.2")
    async with identity_and_payments(urls, prefix, keys) as pair:
        accounts, cards, identity = pair.accounts, pair.cards, pair.identity
        token = await sign_up(accounts, "lola@example.es")
        async with redis_failing(how, local_servers, redis):
            await accounts.Logout(identity_pb.LogoutRequest(), metadata=bearer(token))
            ended = await identity.infra.pool.fetchval(
                "SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL"
            )
            assert ended == 1
            # identity knows at once; the others hear it announced, which such a Redis delivers.
            mine = await failure(accounts.GetProfile(identity_pb.GetProfileRequest(), metadata=bearer(token)))
            assert reason(mine) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")

            async def refused_by_payments() -> bool:
                try:
                    await cards.ValidatePaymentMethod(CARD, metadata=bearer(token))
                except grpc.aio.AioRpcError as exc:
                    return reason(exc) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
                return False

            await eventually(refused_by_payments, what="payments refusing the ended session")

        async def recorded() -> bool:
            return bool([k async for k in identity.infra.redis.scan_iter(f"{prefix}:a4co:revoked:*")])

        await eventually(recorded, timeout=20, what="the revocation written to Redis")
        refused = await failure(cards.ValidatePaymentMethod(CARD, metadata=bearer(token)))
        assert reason(refused) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
