"""identity over gRPC: sign-up, login, tokens, revocation, profiles, and every refusal."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
import pytest_asyncio
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from a4co.artisans.events.v1 import artisan_events_pb2 as artisan_events
from a4co.identity.v1 import identity_service_pb2 as pb
from a4co.identity.v1 import identity_service_pb2_grpc as pb_grpc
from a4co.type.v1 import address_pb2
from services.identity import handlers
from services.identity.__main__ import build
from services.identity.adapters.postgres import (
    PostgresLoginAttempts,
    PostgresPasswordResets,
    unit_of_work_factory,
)
from services.identity.domain import (
    LOGIN_ATTEMPTS,
    LOGIN_WINDOW_S,
    RESET_REQUESTS,
    RESET_REQUESTS_WINDOW_S,
    RESET_WRONG_CODES,
    Address,
    EmailTakenError,
    HashingBusyError,
    WrongResetCodeError,
)
from services.platform.auth import RedisRevocations, Role, TokenIssuer
from services.platform.grpc.status import details_of
from services.platform.local_servers import ServerUrls
from tests.integration.services.harness import (
    Keys,
    RunningService,
    bearer,
    publish_event,
    running_service,
    settings_for,
    stream_events,
)
from tests.integration.services.test_grpcurl import call as grpcurl_call
from tests.support.rpc import failure
from tests.support.waiting import eventually

SCHEMA = Path("services/identity/schema.sql")
PASSWORD = "aceite-de-jaen-2026"


def identity_service(
    urls: ServerUrls, prefix: str, keys: Keys
) -> AbstractAsyncContextManager[RunningService]:
    """identity in-process under the test's prefix, with the environment the test set."""
    return running_service("identity", build, SCHEMA, settings_for("identity", urls, prefix, keys))


@pytest_asyncio.fixture
async def identity(urls: ServerUrls, prefix: str, keys: Keys) -> AsyncIterator[RunningService]:
    async with identity_service(urls, prefix, keys) as svc:
        yield svc


@pytest.fixture
def stub(identity: RunningService) -> pb_grpc.IdentityServiceAsyncStub:
    return pb_grpc.IdentityServiceStub(identity.channel)


async def register(
    stub: pb_grpc.IdentityServiceAsyncStub, email: str, role: int = pb.ROLE_CUSTOMER
) -> pb.User:
    response = await stub.Register(
        pb.RegisterRequest(
            email=email,
            password=PASSWORD,
            display_name="María López",
            role=role,  # type: ignore[arg-type]
            phone_number="+34 612 345 678",
            address=address_pb2.Address(locality="Úbeda", province="Jaén", country_code="ES"),
        )
    )
    return response.user


async def login(stub: pb_grpc.IdentityServiceAsyncStub, email: str) -> pb.LoginResponse:
    return await stub.Login(pb.LoginRequest(email=email, password=PASSWORD))


async def test_sign_up_log_in_and_use_the_token(
    stub: pb_grpc.IdentityServiceAsyncStub, identity: RunningService
) -> None:
    user = await register(stub, "Maria@Example.es")
    assert user.email == "maria@example.es"
    assert user.role == pb.ROLE_CUSTOMER
    assert user.phone_number == "+34612345678"

    session = await login(stub, "maria@example.es")
    token = session.tokens.access_token
    checked = await stub.ValidateToken(pb.ValidateTokenRequest(access_token=token))
    assert checked.user_id == user.user_id
    assert checked.role == pb.ROLE_CUSTOMER

    profile = await stub.GetProfile(pb.GetProfileRequest(), metadata=bearer(token))
    assert profile.user.address.locality == "Úbeda"
    assert profile.user.user_id == user.user_id


async def test_sign_up_starts_a_session_without_a_login(
    stub: pb_grpc.IdentityServiceAsyncStub, identity: RunningService
) -> None:
    signed_up = await stub.Register(
        pb.RegisterRequest(
            email="nuria@example.es", password=PASSWORD, display_name="Nuria", role=pb.ROLE_ARTISAN
        )
    )
    tokens = signed_up.tokens
    checked = await stub.ValidateToken(pb.ValidateTokenRequest(access_token=tokens.access_token))
    assert checked.user_id == signed_up.user.user_id
    assert checked.role == pb.ROLE_ARTISAN
    profile = await stub.GetProfile(pb.GetProfileRequest(), metadata=bearer(tokens.access_token))
    assert profile.user.email == "nuria@example.es"
    # A session like Login's: its refresh token rotates, and the session can be ended.
    renewed = (await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=tokens.refresh_token))).tokens
    assert renewed.refresh_token != tokens.refresh_token
    await stub.Logout(pb.LogoutRequest(), metadata=bearer(renewed.access_token))
    ended = await failure(stub.ValidateToken(pb.ValidateTokenRequest(access_token=renewed.access_token)))
    assert ended.code() == grpc.StatusCode.UNAUTHENTICATED
    # A refused sign-up starts none.
    await failure(register(stub, "NURIA@example.es"))
    assert await identity.infra.pool.fetchval("SELECT count(*) FROM sessions") == 1


async def test_user_registered_is_published_through_the_outbox(
    stub: pb_grpc.IdentityServiceAsyncStub, identity: RunningService
) -> None:
    user = await register(stub, "pepe@example.es", pb.ROLE_ARTISAN)
    js = identity.infra.js
    stream = identity.infra.topology.stream("IDENTITY")

    async def published() -> bool:
        return (await js.stream_info(stream)).state.messages == 1

    await eventually(published, what="UserRegistered in the IDENTITY stream")
    raw = await js.get_msg(stream, seq=1)
    event = identity.infra.codec.decode(raw.data or b"")
    assert event.definition.event_type == "a4co.identity.UserRegistered"
    assert event.payload.user_id == user.user_id  # type: ignore[attr-defined]
    assert event.payload.locality == "Úbeda"  # type: ignore[attr-defined]


async def test_bad_sign_up_names_every_field_and_writes_nothing(
    stub: pb_grpc.IdentityServiceAsyncStub, identity: RunningService
) -> None:
    error = await failure(
        stub.Register(
            pb.RegisterRequest(email="not-an-email", password="short", role=pb.ROLE_ADMIN, phone_number="123")
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = details_of(error)
    assert info is not None
    assert info.domain == "identity.a4co"
    assert {field for field, _ in violations} == {"email", "password", "display_name", "role", "phone_number"}
    assert await identity.infra.pool.fetchval("SELECT count(*) FROM users") == 0
    assert await identity.infra.pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_oversized_input_is_refused_and_never_holds_back_the_events_after_it(
    stub: pb_grpc.IdentityServiceAsyncStub, identity: RunningService
) -> None:
    # Once, a sign-up with a 1.5 MB locality was stored, and its UserRegistered, over NATS's 1 MiB
    # limit, held every later identity event in the outbox for good.
    def sign_up(email: str, address: address_pb2.Address) -> Awaitable[pb.RegisterResponse]:
        return stub.Register(
            pb.RegisterRequest(
                email=email, password=PASSWORD, display_name="Rosa", role=pb.ROLE_CUSTOMER, address=address
            )
        )

    too_big = await failure(sign_up("rosa@example.es", address_pb2.Address(locality="x" * 1_500_000)))
    assert too_big.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # refused by gRPC, never parsed
    assert "larger than max" in (too_big.details() or "")

    too_long = await failure(
        sign_up(
            "rosa@example.es",
            address_pb2.Address(street="x" * 201, locality="x" * 30_000, country_code="España"),
        )
    )
    assert too_long.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, violations = details_of(too_long)
    assert {field for field, _ in violations} == {
        "address.street",
        "address.locality",
        "address.country_code",
    }
    long_email = await failure(sign_up("r" * 250 + "@example.es", address_pb2.Address()))
    assert [field for field, _ in details_of(long_email)[1]] == ["email"]
    # PostgreSQL's text cannot hold a NUL: refused as bad input, not failed as an internal error.
    nul = await failure(sign_up("rosa@example.es", address_pb2.Address(street="Calle\x00Real")))
    assert nul.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details_of(nul)[1] == [("address.street", "must not contain NUL characters")]
    assert await identity.infra.pool.fetchval("SELECT count(*) FROM users") == 0

    user = (await sign_up("rosa@example.es", address_pb2.Address(locality="x" * 80))).user
    js, stream = identity.infra.js, identity.infra.topology.stream("IDENTITY")

    async def published() -> bool:
        return (await js.stream_info(stream)).state.messages == 1

    await eventually(published, what="the sign-up's UserRegistered in the IDENTITY stream")
    raw = await js.get_msg(stream, seq=1)
    assert identity.infra.codec.decode(raw.data or b"").payload.user_id == user.user_id  # type: ignore[attr-defined]

    async def relayed() -> bool:  # the row goes once JetStream's acknowledgement is in
        return bool(await identity.infra.pool.fetchval("SELECT count(*) FROM outbox") == 0)

    await eventually(relayed, what="an empty outbox")


async def test_a_taken_email_is_already_exists(stub: pb_grpc.IdentityServiceAsyncStub) -> None:
    await register(stub, "ana@example.es")
    error = await failure(register(stub, "ANA@example.es"))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    info, _ = details_of(error)
    assert info is not None
    assert info.reason == "EMAIL_TAKEN"


async def test_wrong_password_and_unknown_user_look_the_same(stub: pb_grpc.IdentityServiceAsyncStub) -> None:
    await register(stub, "luis@example.es")
    wrong = await failure(stub.Login(pb.LoginRequest(email="luis@example.es", password="wrong-password-123")))
    unknown = await failure(
        stub.Login(pb.LoginRequest(email="nadie@example.es", password="wrong-password-123"))
    )
    assert wrong.code() == unknown.code() == grpc.StatusCode.UNAUTHENTICATED
    assert details_of(wrong)[0].reason == details_of(unknown)[0].reason == "INVALID_CREDENTIALS"  # type: ignore[union-attr]


def retry_delay_s(error: grpc.aio.AioRpcError) -> int | None:
    """The RetryInfo of a failed call, in seconds."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return int(info.retry_delay.seconds)
    return None


def refused_for_a_while(error: object, reason: str) -> int:
    """Check that `error` is RESOURCE_EXHAUSTED for `reason`, saying in its metadata and RetryInfo
    when to try again; returns that wait, in seconds."""
    assert isinstance(error, grpc.aio.AioRpcError)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info, _ = details_of(error)
    assert info is not None
    assert info.reason == reason
    delay = retry_delay_s(error)
    assert delay is not None
    assert delay >= 1
    assert info.metadata["retry_after_s"] == str(delay)
    return delay


async def test_after_five_password_checks_an_address_is_refused_until_its_window_ends(
    stub: pb_grpc.IdentityServiceAsyncStub, identity: RunningService
) -> None:
    await register(stub, "eva@example.es")
    for address in ("eva@example.es", "nadie@example.es"):  # an account's and no account's alike
        for _ in range(LOGIN_ATTEMPTS):
            wrong = await failure(stub.Login(pb.LoginRequest(email=address, password="wrong-password-123")))
            assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED
        for password in ("wrong-password-123", PASSWORD):  # the right one is not even checked
            refused = await failure(stub.Login(pb.LoginRequest(email=address.upper(), password=password)))
            assert refused_for_a_while(refused, "TOO_MANY_LOGIN_ATTEMPTS") <= LOGIN_WINDOW_S
    # Another address is untouched, and a right password forgets the count.
    await register(stub, "juan@example.es")
    for _ in range(LOGIN_ATTEMPTS - 1):
        await failure(stub.Login(pb.LoginRequest(email="juan@example.es", password="wrong-password-123")))
    await login(stub, "juan@example.es")
    for _ in range(LOGIN_ATTEMPTS - 1):
        await failure(stub.Login(pb.LoginRequest(email="juan@example.es", password="wrong-password-123")))
    assert (await login(stub, "juan@example.es")).tokens.access_token


async def test_checks_made_at_once_are_each_counted(stub: pb_grpc.IdentityServiceAsyncStub) -> None:
    await register(stub, "rosa@example.es")
    guesses = [
        stub.Login(pb.LoginRequest(email="rosa@example.es", password=f"guess-number-{i:03}"))
        for i in range(3 * LOGIN_ATTEMPTS)
    ]
    outcomes = await asyncio.gather(*guesses, return_exceptions=True)
    codes = sorted(o.code().name for o in outcomes if isinstance(o, grpc.aio.AioRpcError))
    assert len(codes) == len(guesses)
    assert codes.count("UNAUTHENTICATED") == LOGIN_ATTEMPTS
    assert codes.count("RESOURCE_EXHAUSTED") == 2 * LOGIN_ATTEMPTS


@pytest_asyncio.fixture
async def identity_never_queueing(
    urls: ServerUrls, prefix: str, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[pb_grpc.IdentityServiceAsyncStub]:
    """identity where a call waits for a hashing thread only with no call of its kind ahead of it
    (sign-ins look only at sign-ins; sign-ups at everyone): with two threads, a burst of sign-ups
    has two hashing, one waiting and the others refused (decision 38)."""
    monkeypatch.setenv("A4CO_HASHING_WAIT_S", "0")
    async with identity_service(urls, prefix, keys) as svc:
        yield pb_grpc.IdentityServiceStub(svc.channel)


async def test_sign_ups_that_would_wait_too_long_are_refused_and_write_nothing(
    identity_never_queueing: pb_grpc.IdentityServiceAsyncStub,
) -> None:
    stub = identity_never_queueing
    emails = [f"burst{i}@example.es" for i in range(12)]
    outcomes = await asyncio.gather(*(register(stub, e) for e in emails), return_exceptions=True)
    refused = [e for e, o in zip(emails, outcomes, strict=True) if isinstance(o, BaseException)]
    assert 2 <= len(emails) - len(refused) < len(emails)  # the two hashing were taken, not all
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            refused_for_a_while(outcome, "HASHING_BUSY")
    for email in refused:  # nothing of a refused sign-up was kept: the address is still free
        assert (await register(stub, email)).email == email


async def test_sign_ins_are_checked_beside_a_burst_of_sign_ups_and_a_refused_check_is_not_counted(
    identity_never_queueing: pb_grpc.IdentityServiceAsyncStub,
) -> None:
    stub = identity_never_queueing
    await register(stub, "rosa@example.es")
    sign_ups = asyncio.gather(
        *(register(stub, f"burst{i}@example.es") for i in range(8)), return_exceptions=True
    )
    # While the sign-ups hash, as many checks of one address at once as its window allows: a
    # sign-in waits behind the sign-ins only, so the first is taken and those behind it refused.
    guesses = [
        stub.Login(pb.LoginRequest(email="rosa@example.es", password=f"guess-number-{i:03}"))
        for i in range(LOGIN_ATTEMPTS)
    ]
    outcomes = await asyncio.gather(*guesses, return_exceptions=True)
    await sign_ups
    checked = [
        o
        for o in outcomes
        if isinstance(o, grpc.aio.AioRpcError) and o.code() == grpc.StatusCode.UNAUTHENTICATED
    ]
    busy = [
        o
        for o in outcomes
        if not isinstance(o, grpc.aio.AioRpcError) or o.code() != grpc.StatusCode.UNAUTHENTICATED
    ]
    assert checked
    assert busy
    for outcome in busy:
        refused_for_a_while(outcome, "HASHING_BUSY")
    # Only the checks made were counted: the address has the rest of its window's checks left.
    for _ in range(LOGIN_ATTEMPTS - len(checked)):
        wrong = await failure(
            stub.Login(pb.LoginRequest(email="rosa@example.es", password="wrong-password-123"))
        )
        assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED
    refused = await failure(stub.Login(pb.LoginRequest(email="rosa@example.es", password=PASSWORD)))
    info, _ = details_of(refused)
    assert info is not None
    assert info.reason == "TOO_MANY_LOGIN_ATTEMPTS"


async def test_when_its_window_ends_an_address_may_sign_in_again_and_ended_windows_are_forgotten(
    urls: ServerUrls, prefix: str, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("A4CO_LOGIN_ATTEMPTS", "2")
    monkeypatch.setenv("A4CO_LOGIN_WINDOW_S", "1.5")
    async with identity_service(urls, prefix, keys) as svc:
        stub = pb_grpc.IdentityServiceStub(svc.channel)
        await register(stub, "pablo@example.es")
        for _ in range(2):
            await failure(
                stub.Login(pb.LoginRequest(email="pablo@example.es", password="wrong-password-123"))
            )
        refused = await failure(login(stub, "pablo@example.es"))
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert retry_delay_s(refused) in (1, 2)

        async def signs_in() -> bool:
            try:
                await login(stub, "pablo@example.es")
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                return False
            return True

        await eventually(signs_in, timeout=10, what="a sign-in once the window ended")
        # What the service's sweep forgets: the windows that have ended, and only those.
        await failure(stub.Login(pb.LoginRequest(email="gone@example.es", password="wrong-password-123")))
        async with svc.infra.pool.acquire() as conn:
            attempts = PostgresLoginAttempts(conn)
            assert await attempts.forget_ended(datetime.now(UTC), 1.5) == 0  # gone's has just begun

            async def forgotten() -> bool:
                await attempts.forget_ended(datetime.now(UTC), 1.5)
                return bool(await conn.fetchval("SELECT count(*) FROM login_attempts") == 0)

            await eventually(forgotten, timeout=10, what="the ended window forgotten")


async def test_missing_expired_and_forged_tokens_are_unauthenticated(
    stub: pb_grpc.IdentityServiceAsyncStub, keys: Keys, tmp_path: Path
) -> None:
    user = await register(stub, "eva@example.es")
    missing = await failure(stub.GetProfile(pb.GetProfileRequest()))
    assert missing.code() == grpc.StatusCode.UNAUTHENTICATED

    expired, _ = keys.issuer(ttl_s=60).issue(user.user_id, Role.CUSTOMER, "s-1", now=time.time() - 3600)
    error = await failure(stub.GetProfile(pb.GetProfileRequest(), metadata=bearer(expired)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert details_of(error)[0].reason == "TOKEN_EXPIRED"  # type: ignore[union-attr]

    forged, _ = Keys.create(tmp_path).issuer().issue(user.user_id, Role.ADMIN, "s-2")
    for token in (forged, "abc.def.ghi"):
        error = await failure(stub.GetProfile(pb.GetProfileRequest(), metadata=bearer(token)))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert details_of(error)[0].reason == "TOKEN_INVALID"  # type: ignore[union-attr]


async def test_logout_revokes_at_once_everywhere(stub: pb_grpc.IdentityServiceAsyncStub) -> None:
    await register(stub, "juan@example.es")
    token = (await login(stub, "juan@example.es")).tokens.access_token
    await stub.Logout(pb.LogoutRequest(), metadata=bearer(token))

    for call in (
        stub.GetProfile(pb.GetProfileRequest(), metadata=bearer(token)),
        stub.ValidateToken(pb.ValidateTokenRequest(access_token=token)),
    ):
        error = await failure(call)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert details_of(error)[0].reason == "TOKEN_REVOKED"  # type: ignore[union-attr]


async def test_a_revocation_redis_lost_is_recorded_again(
    urls: ServerUrls, prefix: str, keys: Keys, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis restarted without its data, flushed, or evicting keys with a TTL: identity records
    the revocations of the sessions ended lately again, from PostgreSQL."""
    monkeypatch.setenv("A4CO_REVOCATIONS_CHECK_S", "0.2")
    async with identity_service(urls, prefix, keys) as svc:
        stub = pb_grpc.IdentityServiceStub(svc.channel)
        await register(stub, "lucia@example.es")
        token = (await login(stub, "lucia@example.es")).tokens.access_token
        session_id = jwt.decode(token, options={"verify_signature": False})["sid"]
        await stub.Logout(pb.LogoutRequest(), metadata=bearer(token))
        elsewhere = RedisRevocations(redis, prefix)  # another process's view, with nothing remembered
        assert await elsewhere.is_revoked(session_id)
        lost = [key async for key in redis.scan_iter(f"{prefix}:*{session_id}*")]
        assert len(lost) == 1
        ttl_before = await redis.ttl(lost[0])
        await redis.delete(*lost)
        assert await elsewhere.missing([session_id]) == [session_id]

        async def recorded_again() -> bool:
            return await elsewhere.missing([session_id]) == []

        await eventually(recorded_again, timeout=10, what="the revocation recorded again")
        assert 0 < await redis.ttl(lost[0]) <= ttl_before  # for what is left of its tokens' life
        fresh = RedisRevocations(redis, prefix)
        assert await fresh.is_revoked(session_id)


async def test_refresh_rotates_and_reuse_ends_the_session(stub: pb_grpc.IdentityServiceAsyncStub) -> None:
    await register(stub, "rosa@example.es")
    first = (await login(stub, "rosa@example.es")).tokens
    second = (await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=first.refresh_token))).tokens
    assert second.refresh_token != first.refresh_token
    await stub.GetProfile(pb.GetProfileRequest(), metadata=bearer(second.access_token))

    reused = await failure(stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=first.refresh_token)))
    assert details_of(reused)[0].reason == "REFRESH_TOKEN_REUSED"  # type: ignore[union-attr]
    # The thief's reuse ended the session: the legitimate new tokens stop working too.
    error = await failure(stub.GetProfile(pb.GetProfileRequest(), metadata=bearer(second.access_token)))
    assert details_of(error)[0].reason == "TOKEN_REVOKED"  # type: ignore[union-attr]
    error = await failure(stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=second.refresh_token)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_profiles_are_private_and_updates_are_announced(
    stub: pb_grpc.IdentityServiceAsyncStub, identity: RunningService
) -> None:
    ana = await register(stub, "ana.p@example.es")
    await register(stub, "otro@example.es")
    ana_token = (await login(stub, "ana.p@example.es")).tokens.access_token
    other_token = (await login(stub, "otro@example.es")).tokens.access_token

    denied = await failure(
        stub.GetProfile(pb.GetProfileRequest(user_id=ana.user_id), metadata=bearer(other_token))
    )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED

    refused = await failure(
        stub.UpdateProfile(
            pb.UpdateProfileRequest(
                user_id=ana.user_id,
                user=pb.User(bio="hack"),
                update_mask=field_mask_pb2.FieldMask(paths=["bio"]),
            ),
            metadata=bearer(other_token),
        )
    )
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await identity.infra.pool.fetchval("SELECT bio FROM users WHERE user_id = $1", ana.user_id) == ""

    bad_mask = await failure(
        stub.UpdateProfile(
            pb.UpdateProfileRequest(
                user=pb.User(email="x@y.es"), update_mask=field_mask_pb2.FieldMask(paths=["email"])
            ),
            metadata=bearer(ana_token),
        )
    )
    assert bad_mask.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "update_mask" in {f for f, _ in details_of(bad_mask)[1]}

    updated = await stub.UpdateProfile(
        pb.UpdateProfileRequest(
            user=pb.User(bio="Alfarera de Úbeda desde 1998.", display_name="Ana Pérez"),
            update_mask=field_mask_pb2.FieldMask(paths=["bio", "display_name"]),
        ),
        metadata=bearer(ana_token),
    )
    assert updated.user.bio == "Alfarera de Úbeda desde 1998."

    js, stream = identity.infra.js, identity.infra.topology.stream("IDENTITY")

    async def profile_updates() -> list[list[str]]:
        found = []
        for seq in range(1, (await js.stream_info(stream)).state.last_seq + 1):
            event = identity.infra.codec.decode((await js.get_msg(stream, seq=seq)).data or b"")
            if event.definition.name == "ProfileUpdated":
                found.append(list(event.payload.changed_fields))  # type: ignore[attr-defined]
        return found

    await eventually(lambda: _nonempty(profile_updates()), what="ProfileUpdated published")
    assert await profile_updates() == [["bio", "display_name"]]


async def _nonempty(found: Awaitable[list[list[str]]]) -> bool:
    return bool(await found)


@pytest_asyncio.fixture
async def identity_with_admin(
    urls: ServerUrls, prefix: str, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningService]:
    monkeypatch.setenv("A4CO_ADMIN_EMAIL", "admin@a4co.es")
    monkeypatch.setenv("A4CO_ADMIN_PASSWORD", PASSWORD)
    async with identity_service(urls, prefix, keys) as svc:
        yield svc


async def test_an_admin_reads_any_profile(identity_with_admin: RunningService) -> None:
    stub = pb_grpc.IdentityServiceStub(identity_with_admin.channel)
    user = await register(stub, "cliente@example.es")
    admin = await stub.Login(pb.LoginRequest(email="admin@a4co.es", password=PASSWORD))
    assert admin.user.role == pb.ROLE_ADMIN
    profile = await stub.GetProfile(
        pb.GetProfileRequest(user_id=user.user_id), metadata=bearer(admin.tokens.access_token)
    )
    assert profile.user.email == "cliente@example.es"


async def test_a_password_change_ends_the_other_sessions_and_is_announced(
    stub: pb_grpc.IdentityServiceAsyncStub, identity: RunningService
) -> None:
    await register(stub, "rosa@example.es")  # sign-up's own session: one of the others
    here = (await login(stub, "rosa@example.es")).tokens
    elsewhere = (await login(stub, "rosa@example.es")).tokens
    new = "otra-clave-de-rosa-2026"
    changed = await stub.ChangePassword(
        pb.ChangePasswordRequest(current_password=PASSWORD, new_password=new),
        metadata=bearer(here.access_token),
    )
    assert changed.ended_sessions == 2
    # This session goes on; the others end at once, refresh tokens included.
    assert (await stub.GetProfile(pb.GetProfileRequest(), metadata=bearer(here.access_token))).user.email
    ended = await failure(stub.GetProfile(pb.GetProfileRequest(), metadata=bearer(elsewhere.access_token)))
    assert details_of(ended)[0].reason == "TOKEN_REVOKED"  # type: ignore[union-attr]
    refused = await failure(stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=elsewhere.refresh_token)))
    assert details_of(refused)[0].reason == "SESSION_REVOKED"  # type: ignore[union-attr]
    # Only the new password signs in now.
    old = await failure(stub.Login(pb.LoginRequest(email="rosa@example.es", password=PASSWORD)))
    assert old.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await stub.Login(pb.LoginRequest(email="rosa@example.es", password=new))).tokens.access_token
    me = (await stub.GetProfile(pb.GetProfileRequest(), metadata=bearer(here.access_token))).user.user_id

    async def announced() -> list[tuple[str, int]]:
        return [
            (e.payload.user_id, e.payload.ended_sessions)  # type: ignore[attr-defined]
            for e in await stream_events(identity, "IDENTITY")
            if e.definition.name == "PasswordChanged"
        ]

    async def published() -> bool:
        return bool(await announced())

    await eventually(published, what="PasswordChanged published")
    assert await announced() == [(me, 2)]


async def test_a_wrong_current_password_is_named_and_counted_as_a_login_check(
    stub: pb_grpc.IdentityServiceAsyncStub,
) -> None:
    await register(stub, "pablo@example.es")
    me = bearer((await login(stub, "pablo@example.es")).tokens.access_token)

    def change(current: str, new: str = "nueva-clave-de-pablo") -> Awaitable[pb.ChangePasswordResponse]:
        return stub.ChangePassword(
            pb.ChangePasswordRequest(current_password=current, new_password=new), metadata=me
        )

    bad = await failure(change("", "corta"))
    assert [f for f, _ in details_of(bad)[1]] == ["current_password", "new_password"]
    same = await failure(change(PASSWORD, PASSWORD))
    assert details_of(same)[1] == [("new_password", "must differ from the current password")]
    for _ in range(LOGIN_ATTEMPTS):
        wrong = await failure(change("no-es-la-clave-123"))
        assert details_of(wrong)[1] == [("current_password", "is not this account's password")]
    # Past the limit the current password is not even checked, the right one included.
    refused = await failure(change(PASSWORD))
    assert refused_for_a_while(refused, "TOO_MANY_LOGIN_ATTEMPTS") <= LOGIN_WINDOW_S
    unauthenticated = await failure(
        stub.ChangePassword(pb.ChangePasswordRequest(current_password=PASSWORD, new_password="x" * 12))
    )
    assert unauthenticated.code() == grpc.StatusCode.UNAUTHENTICATED


async def reset_codes(identity: RunningService) -> list[tuple[str, str, str]]:
    """(user, address, code) of every PasswordResetRequested published so far."""
    return [
        (e.payload.user_id, e.payload.email, e.payload.code)  # type: ignore[attr-defined]
        for e in await stream_events(identity, "IDENTITY")
        if e.definition.name == "PasswordResetRequested"
    ]


async def mailed_code(identity: RunningService, email: str, sent: int = 1) -> str:
    """The code of the `sent`-th reset requested for `email`, once it is published."""

    async def published() -> bool:
        return len([c for _, a, c in await reset_codes(identity) if a == email]) >= sent

    await eventually(published, what=f"reset code {sent} for {email} published")
    return [c for _, a, c in await reset_codes(identity) if a == email][sent - 1]


async def test_a_reset_code_leaves_the_identity_stream_when_it_expires(
    urls: ServerUrls, prefix: str, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("A4CO_RESET_CODE_TTL_S", "3")
    async with identity_service(urls, prefix, keys) as svc:
        stub = pb_grpc.IdentityServiceStub(svc.channel)
        await register(stub, "rosa@example.es")
        await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email="rosa@example.es"))
        code = await mailed_code(svc, "rosa@example.es")  # read from the stream, as notifications would

        async def left() -> bool:
            return not await reset_codes(svc)

        await eventually(left, timeout=20, what="the reset's event gone from IDENTITY")
        kept = {e.definition.name for e in await stream_events(svc, "IDENTITY")}
        assert "UserRegistered" in kept, "the account's other events stay"
        expired = await failure(
            stub.ResetPassword(
                pb.ResetPasswordRequest(email="rosa@example.es", code=code, new_password="nueva-clave-2026")
            )
        )
        assert details_of(expired)[0].reason == "RESET_CODE_REJECTED"  # type: ignore[union-attr]


async def test_a_forgotten_password_is_reset_with_the_mailed_code_and_every_session_ends(
    stub: pb_grpc.IdentityServiceAsyncStub, identity: RunningService
) -> None:
    user = await register(stub, "rosa@example.es")  # sign-up's session, and one more
    other = (await login(stub, "rosa@example.es")).tokens
    before = datetime.now(UTC)
    asked = await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email=" Rosa@Example.ES "))
    lives_s = (asked.expire_time.ToDatetime(tzinfo=UTC) - before).total_seconds()
    assert 30 * 60 - 5 < lives_s <= 30 * 60 + 5
    code = await mailed_code(identity, "rosa@example.es")
    assert len(code) == 11
    assert code[5] == "-"
    [(whose, _, _)] = await reset_codes(identity)
    assert whose == user.user_id
    # Only the code's hash is kept (SHA-256, as e-mailed without its dash).
    stored = await identity.infra.pool.fetchval(
        "SELECT code_hash FROM password_resets WHERE user_id = $1", whose
    )
    assert stored == hashlib.sha256(code.replace("-", "").encode()).hexdigest()

    new = "nueva-clave-de-rosa-26"
    typed = f" {code[:5].lower()} {code[6:].lower()} "  # as a person may type it
    reset = await stub.ResetPassword(
        pb.ResetPasswordRequest(email="rosa@example.es", code=typed, new_password=new)
    )
    assert (reset.user.user_id, reset.ended_sessions) == (user.user_id, 2)
    # Every session before the reset ended, refresh tokens included; the new one works.
    ended = await failure(stub.GetProfile(pb.GetProfileRequest(), metadata=bearer(other.access_token)))
    assert details_of(ended)[0].reason == "TOKEN_REVOKED"  # type: ignore[union-attr]
    refused = await failure(stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=other.refresh_token)))
    assert details_of(refused)[0].reason == "SESSION_REVOKED"  # type: ignore[union-attr]
    me = await stub.GetProfile(pb.GetProfileRequest(), metadata=bearer(reset.tokens.access_token))
    assert me.user.email == "rosa@example.es"
    old = await failure(stub.Login(pb.LoginRequest(email="rosa@example.es", password=PASSWORD)))
    assert old.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await stub.Login(pb.LoginRequest(email="rosa@example.es", password=new))).tokens.access_token
    # A code works once.
    again = await failure(
        stub.ResetPassword(pb.ResetPasswordRequest(email="rosa@example.es", code=code, new_password=PASSWORD))
    )
    assert again.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = details_of(again)
    assert info is not None
    assert info.reason == "RESET_CODE_REJECTED"
    assert [f for f, _ in violations] == ["code"]

    async def changes() -> list[tuple[int, bool]]:
        return [
            (e.payload.ended_sessions, e.payload.reset)  # type: ignore[attr-defined]
            for e in await stream_events(identity, "IDENTITY")
            if e.definition.name == "PasswordChanged"
        ]

    async def announced() -> bool:
        return bool(await changes())

    await eventually(announced, what="PasswordChanged published")
    assert await changes() == [(2, True)]


async def test_an_address_without_an_account_is_answered_alike_and_sent_nothing(
    stub: pb_grpc.IdentityServiceAsyncStub, identity: RunningService
) -> None:
    nobody = await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email="nadie@example.es"))
    assert nobody.expire_time.seconds > 0
    user = await register(stub, "alba@example.es")
    await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email="alba@example.es"))
    await mailed_code(identity, "alba@example.es")  # published after the one that was not
    assert [(u, a) for u, a, _ in await reset_codes(identity)] == [(user.user_id, "alba@example.es")]
    guess = await failure(
        stub.ResetPassword(
            pb.ResetPasswordRequest(email="nadie@example.es", code="ABCDE-FGHJK", new_password=PASSWORD)
        )
    )
    assert details_of(guess)[1] == [
        ("code", "is not a code sent to this address, or it was used or has expired")
    ]


async def test_reset_codes_are_limited_per_address_whether_an_account_has_it_or_not(
    stub: pb_grpc.IdentityServiceAsyncStub, identity: RunningService
) -> None:
    await register(stub, "eva@example.es")
    for address in ("eva@example.es", "nadie@example.es"):
        for _ in range(RESET_REQUESTS):
            await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email=address))
        refused = await failure(
            stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email=address.upper()))
        )
        assert refused_for_a_while(refused, "TOO_MANY_RESET_REQUESTS") <= RESET_REQUESTS_WINDOW_S
    # Requests made at once are each counted; another address is untouched.
    asked = [
        stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email="juan@example.es"))
        for _ in range(2 * RESET_REQUESTS)
    ]
    outcomes = await asyncio.gather(*asked, return_exceptions=True)
    assert sum(not isinstance(o, BaseException) for o in outcomes) == RESET_REQUESTS
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            refused_for_a_while(outcome, "TOO_MANY_RESET_REQUESTS")
    # An hour later the address may ask again, and the requests older than that are forgotten.
    pool = identity.infra.pool
    await pool.execute("UPDATE password_resets SET requested_at = requested_at - interval '61 minutes'")
    await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email="eva@example.es"))
    async with pool.acquire() as conn:
        forgotten = await PostgresPasswordResets(conn).forget_before(
            datetime.now(UTC) - timedelta(seconds=RESET_REQUESTS_WINDOW_S)
        )
    assert forgotten == 3 * RESET_REQUESTS
    assert await pool.fetchval("SELECT count(*) FROM password_resets") == 1


async def test_wrong_and_expired_codes_are_refused_and_wrong_ones_stop_the_address_codes(
    stub: pb_grpc.IdentityServiceAsyncStub, identity: RunningService
) -> None:
    email = "pablo@example.es"
    await register(stub, email)

    def reset(code: str, new: str = "nueva-clave-de-pablo") -> Awaitable[pb.ResetPasswordResponse]:
        return stub.ResetPassword(pb.ResetPasswordRequest(email=email, code=code, new_password=new))

    async def rejected(code: str) -> None:
        refused = await failure(reset(code))
        assert details_of(refused)[0].reason == "RESET_CODE_REJECTED"  # type: ignore[union-attr]

    bad = await failure(stub.ResetPassword(pb.ResetPasswordRequest(new_password="corta")))
    assert [f for f, _ in details_of(bad)[1]] == ["email", "code", "new_password"]
    bad = await failure(stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email="no-es-un-correo")))
    assert details_of(bad)[1] == [("email", "must be an e-mail address")]

    # An expired code is refused.
    await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email=email))
    expired = await mailed_code(identity, email, 1)
    await identity.infra.pool.execute("UPDATE password_resets SET expires_at = now() - interval '1 second'")
    await rejected(expired)
    # A new code does not stop the one before; wrong codes up to the limit leave both live ...
    await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email=email))
    await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email=email))
    first, second = await mailed_code(identity, email, 2), await mailed_code(identity, email, 3)
    for i in range(RESET_WRONG_CODES - 1):
        await rejected(f"WRONG-{i:05}")
    assert (await reset(first)).ended_sessions == 1  # sign-up's session
    # ... and a reset uses up the other codes.
    await rejected(second)
    # Past the limit of wrong codes, even the right one is refused until a new one is asked for.
    await identity.infra.pool.execute(
        "UPDATE password_resets SET requested_at = requested_at - interval '61 minutes'"
    )
    await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email=email))
    right = await mailed_code(identity, email, 4)
    for i in range(RESET_WRONG_CODES):
        await rejected(f"WRONG-{i:05}")
    await rejected(right)
    await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email=email))
    assert (await reset(await mailed_code(identity, email, 5), "otra-clave-de-pablo")).user.email == email


class BusyHasher:
    """A hasher that refuses every hash, as identity's does when the calls ahead would take too long."""

    async def hash(self, password: str, *, sign_in: bool = False) -> str:
        raise HashingBusyError(1.0)

    async def verify(self, password_hash: str, password: str) -> bool:
        raise HashingBusyError(1.0)


async def test_a_reset_refused_for_busy_hashing_leaves_its_code_live(
    stub: pb_grpc.IdentityServiceAsyncStub, identity: RunningService
) -> None:
    await register(stub, "luz@example.es")
    await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email="luz@example.es"))
    code = await mailed_code(identity, "luz@example.es")
    busy = deps_with(identity, BusyHasher())
    with pytest.raises(HashingBusyError):
        await handlers.reset_password(busy, "luz@example.es", code, "nueva-clave-de-luz")
    reset = await stub.ResetPassword(
        pb.ResetPasswordRequest(email="luz@example.es", code=code, new_password="nueva-clave-de-luz")
    )
    assert reset.user.email == "luz@example.es"


async def test_the_readmes_grpcurl_commands_reset_a_forgotten_password_and_end_a_session(
    stub: pb_grpc.IdentityServiceAsyncStub, identity: RunningService
) -> None:
    await register(stub, "ana@jaen.es")
    service = "a4co.identity.v1.IdentityService"
    asked = await grpcurl_call(identity.address, f"{service}/RequestPasswordReset", {"email": "ana@jaen.es"})
    assert "expire_time" in asked
    code = await mailed_code(identity, "ana@jaen.es")
    reset = await grpcurl_call(
        identity.address,
        f"{service}/ResetPassword",
        {"email": "ana@jaen.es", "code": code, "new_password": "olivar-de-jaen-2027"},
    )
    assert reset["ended_sessions"] == 1  # sign-up's
    assert reset["tokens"]["access_token"]  # type: ignore[index]
    again = await stub.Login(pb.LoginRequest(email="ana@jaen.es", password="olivar-de-jaen-2027"))
    assert again.user.email == "ana@jaen.es"
    # Where the account is signed in, and the reset's session ended from the login's.
    token = again.tokens.access_token
    listed = await grpcurl_call(identity.address, f"{service}/ListSessions", {}, token=token)
    sessions: list[dict[str, Any]] = listed["sessions"]  # type: ignore[assignment]
    assert [s.get("current", False) for s in sessions] == [True, False]
    assert sessions[1]["user_agent"].startswith("grpcurl/")
    ending = {"session_id": sessions[1]["session_id"]}
    await grpcurl_call(identity.address, f"{service}/EndSession", ending, token=token)
    assert len((await stub.ListSessions(pb.ListSessionsRequest(), metadata=bearer(token))).sessions) == 1


async def test_a_customer_closes_their_account_its_data_erased_and_its_address_free_again(
    stub: pb_grpc.IdentityServiceAsyncStub, identity: RunningService
) -> None:
    user = await register(stub, "luis@example.es")  # sign-up's session, and one more
    here = (await login(stub, "luis@example.es")).tokens
    await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email="luis@example.es"))
    me = bearer(here.access_token)

    def close(password: str) -> Awaitable[pb.DeleteAccountResponse]:
        return stub.DeleteAccount(pb.DeleteAccountRequest(current_password=password), metadata=me)

    empty = await failure(close(""))
    assert details_of(empty)[1] == [("current_password", "is required")]
    wrong = await failure(close("no-es-la-clave-123"))
    assert details_of(wrong)[1] == [("current_password", "is not this account's password")]
    before = datetime.now(UTC)
    closed = await close(PASSWORD)
    assert closed.ended_sessions == 2
    assert closed.delete_time.ToDatetime(tzinfo=UTC) >= before.replace(microsecond=0)
    # Every session ended, this one included; the address signs in no more, and may sign up anew.
    ended = await failure(stub.GetProfile(pb.GetProfileRequest(), metadata=me))
    assert details_of(ended)[0].reason == "TOKEN_REVOKED"  # type: ignore[union-attr]
    gone = await failure(stub.Login(pb.LoginRequest(email="luis@example.es", password=PASSWORD)))
    assert gone.code() == grpc.StatusCode.UNAUTHENTICATED
    again = await register(stub, "luis@example.es")
    assert again.user_id != user.user_id
    # Nothing personal is kept: the row stays for its sessions, erased.
    row = await identity.infra.pool.fetchrow("SELECT * FROM users WHERE user_id = $1", user.user_id)
    assert row is not None
    assert (row["email"], row["display_name"], row["phone_number"], row["password_hash"], row["bio"]) == (
        f"{user.user_id}@deleted.invalid",
        "",
        "",
        "",
        "",
    )
    assert row["address"] in ("{}", {})
    assert row["deleted_at"] is not None
    resets = await identity.infra.pool.fetchval(
        "SELECT count(*) FROM password_resets WHERE user_id = $1", user.user_id
    )
    assert resets == 0

    async def deleted() -> list[str]:
        return [
            e.payload.user_id  # type: ignore[attr-defined]
            for e in await stream_events(identity, "IDENTITY")
            if e.definition.name == "UserDeleted"
        ]

    async def announced() -> bool:
        return bool(await deleted())

    await eventually(announced, what="UserDeleted published")
    assert await deleted() == [user.user_id]


async def test_an_artisan_closes_their_account_once_their_workshop_has_left_the_marketplace(
    stub: pb_grpc.IdentityServiceAsyncStub, identity: RunningService
) -> None:
    artisan = await register(stub, "taller@example.es", pb.ROLE_ARTISAN)
    me = bearer((await login(stub, "taller@example.es")).tokens.access_token)
    closing = pb.DeleteAccountRequest(current_password=PASSWORD)
    refused = await failure(stub.DeleteAccount(closing, metadata=me))
    assert (refused.code(), details_of(refused)[0].reason) == (  # type: ignore[union-attr]
        grpc.StatusCode.FAILED_PRECONDITION,
        "ACCOUNT_NOT_SELF_SERVICE",
    )
    assert (await stub.GetProfile(pb.GetProfileRequest(), metadata=me)).user.email == "taller@example.es"

    # The workshop leaves (artisans' ArtisanOffboarded); one of an id that is no account's first,
    # which changes nothing and fails nothing.
    for artisan_id in ("no-es-un-id", artisan.user_id):
        left = artisan_events.ArtisanOffboarded(artisan_id=artisan_id, revision=2)
        left.offboard_time.GetCurrentTime()
        await publish_event(identity, left, artisan_id, source="artisans")

    async def recorded() -> bool:
        query = "SELECT offboarded_at IS NOT NULL FROM users WHERE email = 'taller@example.es'"
        return bool(await identity.infra.pool.fetchval(query))

    await eventually(recorded, what="the workshop's leaving recorded")
    closed = await stub.DeleteAccount(closing, metadata=me)
    assert closed.ended_sessions == 2  # the sign-up's and the login's
    gone = await failure(stub.Login(pb.LoginRequest(email="taller@example.es", password=PASSWORD)))
    assert gone.code() == grpc.StatusCode.UNAUTHENTICATED
    outcomes = {"service": "identity", "event_type": "a4co.artisans.ArtisanOffboarded"}
    handled = REGISTRY.get_sample_value("a4co_events_consumed_total", {**outcomes, "result": "handled"})
    assert (handled or 0) >= 2
    assert REGISTRY.get_sample_value("a4co_events_consumed_total", {**outcomes, "result": "retried"}) is None


class RefusingHasher:
    """A hasher that must not be asked: a call to it fails the test."""

    async def hash(self, password: str, *, sign_in: bool = False) -> str:
        raise AssertionError("hashed a password it did not need")

    async def verify(self, password_hash: str, password: str) -> bool:
        raise AssertionError("checked a password it did not need")


class ClosingHasher:
    """A hasher during whose hash the account of `email` is closed, as a DeleteAccount running at
    that moment would close it."""

    def __init__(self, pool: Any, email: str) -> None:
        self.pool, self.email = pool, email

    async def hash(self, password: str, *, sign_in: bool = False) -> str:
        await self.pool.execute("UPDATE users SET deleted_at = now() WHERE email = $1", self.email)
        return "not-a-hash"

    async def verify(self, password_hash: str, password: str) -> bool:
        raise AssertionError("no password is checked in a reset")


def deps_with(identity: RunningService, hasher: Any) -> handlers.Deps:
    infra = identity.infra
    return handlers.Deps(
        uow=functools.partial(unit_of_work_factory, infra.pool, infra.outbox),
        hasher=hasher,
        issuer=TokenIssuer(infra.settings.private_key()),
        verifier=infra.verifier(infra.settings.public_key()),
        revocations=infra.revocations,
    )


async def test_a_taken_address_is_refused_before_its_password_is_hashed(
    stub: pb_grpc.IdentityServiceAsyncStub, identity: RunningService
) -> None:
    await register(stub, "rosa@example.es")
    with pytest.raises(EmailTakenError):
        await handlers.register(
            deps_with(identity, RefusingHasher()),
            " Rosa@Example.es",
            PASSWORD,
            "Rosa",
            Role.CUSTOMER,
            "",
            Address(),
        )


async def test_a_reset_whose_account_closes_meanwhile_is_refused_as_its_code(
    stub: pb_grpc.IdentityServiceAsyncStub, identity: RunningService
) -> None:
    await register(stub, "luz@example.es")
    await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email="luz@example.es"))
    code = await mailed_code(identity, "luz@example.es")
    closing = deps_with(identity, ClosingHasher(identity.infra.pool, "luz@example.es"))
    with pytest.raises(WrongResetCodeError):
        await handlers.reset_password(closing, "luz@example.es", code, "nueva-clave-de-luz")


async def test_a_user_lists_their_sessions_and_ends_one_where_they_are_signed_in(
    stub: pb_grpc.IdentityServiceAsyncStub, identity: RunningService
) -> None:
    signed_up = await stub.Register(
        pb.RegisterRequest(
            email="sara@example.es", password=PASSWORD, display_name="Sara", role=pb.ROLE_CUSTOMER
        )
    )
    phone_channel = grpc.aio.insecure_channel(
        identity.address, options=[("grpc.primary_user_agent", "a4co-app/2.1 (Android 14)")]
    )
    phone = (await pb_grpc.IdentityServiceStub(phone_channel).Login(
        pb.LoginRequest(email="sara@example.es", password=PASSWORD)
    )).tokens  # fmt: skip
    await phone_channel.close()
    laptop = (await login(stub, "sara@example.es")).tokens
    me = bearer(laptop.access_token)

    def ids(response: pb.ListSessionsResponse) -> list[str]:
        return [s.session_id for s in response.sessions]

    async def session_of(access_token: str) -> str:
        return (await stub.ValidateToken(pb.ValidateTokenRequest(access_token=access_token))).session_id

    first = await stub.ListSessions(pb.ListSessionsRequest(page_size=2), metadata=me)
    rest = await stub.ListSessions(
        pb.ListSessionsRequest(page_size=2, page_token=first.next_page_token), metadata=me
    )
    everything = [*first.sessions, *rest.sessions]
    assert [s.session_id for s in everything] == [
        await session_of(laptop.access_token),
        await session_of(phone.access_token),
        await session_of(signed_up.tokens.access_token),
    ], "newest first"
    assert rest.next_page_token == ""
    assert [s.current for s in everything] == [True, False, False]
    assert everything[1].user_agent.startswith("a4co-app/2.1 (Android 14)")
    assert everything[0].refresh_time == everything[0].create_time
    assert everything[0].expire_time.ToDatetime() > everything[0].create_time.ToDatetime()

    # The phone is lost: its session ends, the others go on.
    phone_session = everything[1].session_id
    await stub.EndSession(pb.EndSessionRequest(session_id=phone_session), metadata=me)
    ended = await failure(stub.GetProfile(pb.GetProfileRequest(), metadata=bearer(phone.access_token)))
    assert details_of(ended)[0].reason == "TOKEN_REVOKED"  # type: ignore[union-attr]
    refused = await failure(stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=phone.refresh_token)))
    assert details_of(refused)[0].reason == "SESSION_REVOKED"  # type: ignore[union-attr]
    left = await stub.ListSessions(pb.ListSessionsRequest(), metadata=me)
    assert ids(left) == [everything[0].session_id, everything[2].session_id]
    await stub.EndSession(pb.EndSessionRequest(session_id=phone_session), metadata=me)  # ended already: alike
    # An expired session is not listed.
    await identity.infra.pool.execute(
        "UPDATE sessions SET refresh_expires_at = now() - interval '1 second' WHERE session_id = $1",
        everything[2].session_id,
    )
    assert ids(await stub.ListSessions(pb.ListSessionsRequest(), metadata=me)) == [everything[0].session_id]

    # Another user's session, or none, is not found; a bad id is named.
    joining = pb.RegisterRequest(
        email="otro@example.es", password=PASSWORD, display_name="Otro", role=pb.ROLE_CUSTOMER
    )
    other = (await stub.Register(joining)).tokens
    for session_id in (await session_of(other.access_token), str(uuid.uuid4())):
        missing = await failure(stub.EndSession(pb.EndSessionRequest(session_id=session_id), metadata=me))
        assert (missing.code(), details_of(missing)[0].reason) == (  # type: ignore[union-attr]
            grpc.StatusCode.NOT_FOUND,
            "SESSION_NOT_FOUND",
        )
    assert (await stub.GetProfile(pb.GetProfileRequest(), metadata=bearer(other.access_token))).user.email
    bad = await failure(stub.EndSession(pb.EndSessionRequest(session_id="no-es-un-id"), metadata=me))
    assert [f for f, _ in details_of(bad)[1]] == ["session_id"]
    # Ending its own session is a logout.
    await stub.EndSession(pb.EndSessionRequest(session_id=everything[0].session_id), metadata=me)
    gone = await failure(stub.ListSessions(pb.ListSessionsRequest(), metadata=me))
    assert gone.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_admin_closes_a_customers_account_and_no_one_else_closes_anothers(
    identity_with_admin: RunningService,
) -> None:
    stub = pb_grpc.IdentityServiceStub(identity_with_admin.channel)
    admin = bearer(
        (await stub.Login(pb.LoginRequest(email="admin@a4co.es", password=PASSWORD))).tokens.access_token
    )
    customer = await register(stub, "pepa@example.es")
    artisan = await register(stub, "tienda@example.es", pb.ROLE_ARTISAN)
    other = bearer((await login(stub, "tienda@example.es")).tokens.access_token)

    def close(
        user_id: str, who: tuple[tuple[str, str]], password: str = ""
    ) -> Awaitable[pb.DeleteAccountResponse]:
        return stub.DeleteAccount(
            pb.DeleteAccountRequest(user_id=user_id, current_password=password), metadata=who
        )

    theirs = await failure(close(customer.user_id, other, PASSWORD))
    assert (theirs.code(), details_of(theirs)[0].reason) == (  # type: ignore[union-attr]
        grpc.StatusCode.PERMISSION_DENIED,
        "NOT_OWNER",
    )
    not_a_customer = await failure(close(artisan.user_id, admin))
    assert details_of(not_a_customer)[0].reason == "ACCOUNT_NOT_SELF_SERVICE"  # type: ignore[union-attr]
    bad = await failure(close("no-es-un-id", admin))
    assert [f for f, _ in details_of(bad)[1]] == ["user_id"]
    # The customer writes from their address: the admin finds the account by it.
    found = await stub.GetProfile(pb.GetProfileRequest(email=" Pepa@Example.es "), metadata=admin)
    assert found.user.user_id == customer.user_id
    nobody = await failure(stub.GetProfile(pb.GetProfileRequest(email="nadie@example.es"), metadata=admin))
    assert nobody.code() == grpc.StatusCode.NOT_FOUND
    for address in ("pepa@example.es", "nadie@example.es"):  # another's, or none: refused alike
        refused = await failure(stub.GetProfile(pb.GetProfileRequest(email=address), metadata=other))
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    own = await stub.GetProfile(pb.GetProfileRequest(email="TIENDA@example.es"), metadata=other)
    assert own.user.user_id == artisan.user_id
    both = await failure(
        stub.GetProfile(pb.GetProfileRequest(user_id=customer.user_id, email="a@b.es"), metadata=admin)
    )
    assert details_of(both)[1] == [("email", "name the user by id or by address, not both")]
    closed = await close(found.user.user_id, admin)  # no password: the customer asked the operators
    assert closed.ended_sessions == 1  # sign-up's
    gone = await failure(stub.Login(pb.LoginRequest(email="pepa@example.es", password=PASSWORD)))
    assert gone.code() == grpc.StatusCode.UNAUTHENTICATED
    again = await failure(close(customer.user_id, admin))
    assert (again.code(), details_of(again)[0].reason) == (  # type: ignore[union-attr]
        grpc.StatusCode.NOT_FOUND,
        "USER_NOT_FOUND",
    )
    # Naming themselves, a user still gives their password.
    me = bearer((await login(stub, "tienda@example.es")).tokens.access_token)
    unchecked = await failure(close(artisan.user_id, me))
    assert details_of(unchecked)[1] == [("current_password", "is required")]
