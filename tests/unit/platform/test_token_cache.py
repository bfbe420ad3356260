"""The verifier's cache of checked tokens: it saves decoding, never a check that matters."""

from __future__ import annotations

import time

import jwt
import pytest
import redis.exceptions

from services.platform.auth import Principal, Role, TokenIssuer, TokenVerifier, generate_keypair
from services.platform.errors import UnauthenticatedError


class Revoked:
    """Revocations in memory (the Redis store is covered by the integration tests)."""

    def __init__(self) -> None:
        self.sessions: set[str] = set()

    async def is_revoked(self, session_id: str) -> bool:
        return session_id in self.sessions

    async def revoke(self, session_id: str, ttl_s: int) -> None:
        self.sessions.add(session_id)

    async def missing(self, session_ids: list[str]) -> list[str]:
        return [s for s in session_ids if s not in self.sessions]


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token PyJWT is asked to decode."""
    seen: list[str] = []
    real = jwt.decode

    def counting(token: str, *args: object, **kwargs: object) -> object:
        seen.append(token)
        return real(token, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counting)
    return seen


def keys() -> tuple[TokenIssuer, str]:
    private, public = generate_keypair()
    return TokenIssuer(private, ttl_s=900), public


async def test_a_token_is_decoded_once_and_still_checked_for_revocation(decodes: list[str]) -> None:
    issuer, public = keys()
    revoked = Revoked()
    verifier = TokenVerifier(public, revoked)
    token, _ = issuer.issue("u-1", Role.CUSTOMER, "s-1")

    first = await verifier.verify(token)
    second = await verifier.verify(token)
    assert first == second
    assert (first.user_id, first.role) == ("u-1", Role.CUSTOMER)
    assert decodes == [token]

    await revoked.revoke("s-1", 900)
    with pytest.raises(UnauthenticatedError) as caught:
        await verifier.verify(token)
    assert caught.value.reason == "TOKEN_REVOKED"


async def test_a_cached_token_expires_on_time() -> None:
    issuer, public = keys()
    now = [time.time()]
    verifier = TokenVerifier(public, Revoked(), leeway_s=5, clock=lambda: now[0])
    token, expires = issuer.issue("u-1", Role.ARTISAN, "s-1")
    await verifier.verify(token)

    now[0] = expires + 4  # within the leeway
    assert (await verifier.verify(token)).user_id == "u-1"
    now[0] = expires + 6
    with pytest.raises(UnauthenticatedError) as caught:
        await verifier.verify(token)
    assert caught.value.reason == "TOKEN_EXPIRED"


async def test_a_tampered_copy_of_a_cached_token_is_refused() -> None:
    issuer, public = keys()
    verifier = TokenVerifier(public, Revoked())
    token, _ = issuer.issue("u-1", Role.CUSTOMER, "s-1")
    await verifier.verify(token)

    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(UnauthenticatedError) as caught:
        await verifier.verify(forged)
    assert caught.value.reason == "TOKEN_INVALID"


async def test_the_cache_is_bounded_and_forgets_the_oldest_first(decodes: list[str]) -> None:
    issuer, public = keys()
    verifier = TokenVerifier(public, Revoked(), cache_size=2)
    tokens = [issuer.issue(f"u-{i}", Role.CUSTOMER, f"s-{i}")[0] for i in range(3)]
    for token in tokens:
        await verifier.verify(token)
    await verifier.verify(tokens[2])  # still cached
    await verifier.verify(tokens[0])  # forgotten when the third came in: decoded again
    assert decodes == [tokens[0], tokens[1], tokens[2], tokens[0]]


class Down(Revoked):
    """A revocation store whose Redis fails."""

    async def is_revoked(self, session_id: str) -> bool:
        raise redis.exceptions.ConnectionError("Error 111 connecting to redis: Connection refused.")


async def test_while_redis_fails_the_fallback_says_which_sessions_ended() -> None:
    issuer, public = keys()
    asked: list[str] = []

    async def sessions_table(principal: Principal) -> bool:
        asked.append(principal.session_id)
        return principal.session_id == "s-ended"

    verifier = TokenVerifier(public, Down(), fallback=sessions_table)
    live, _ = issuer.issue("u-1", Role.CUSTOMER, "s-live")
    ended, _ = issuer.issue("u-2", Role.CUSTOMER, "s-ended")
    assert (await verifier.verify(live)).user_id == "u-1"
    with pytest.raises(UnauthenticatedError) as refused:
        await verifier.verify(ended)
    assert refused.value.reason == "TOKEN_REVOKED"
    assert asked == ["s-live", "s-ended"]

    without = TokenVerifier(public, Down())
    with pytest.raises(redis.exceptions.ConnectionError):  # answered UNAVAILABLE by the RPC layer
        await without.verify(live)


async def test_the_fallback_is_not_asked_while_redis_answers() -> None:
    issuer, public = keys()

    async def never(principal: Principal) -> bool:
        raise AssertionError("asked while Redis answers")

    revoked = Revoked()
    revoked.sessions.add("s-1")
    verifier = TokenVerifier(public, revoked, fallback=never)
    token, _ = issuer.issue("u-1", Role.CUSTOMER, "s-1")
    with pytest.raises(UnauthenticatedError):
        await verifier.verify(token)
