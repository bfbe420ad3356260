"""Access tokens: issued by identity, verified locally by every service, revoked through Redis.

Tokens are Ed25519-signed JWTs (see docs/decisions/0008). A verifier needs only the public key and
the revocation store, so authentication costs no call to identity and a logout is seen at once.
While Redis fails, a verifier asks the store of record instead (`fallback`: identity's sessions,
through identity's ValidateToken; decision 34), rather than refuse every authenticated call.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from redis.asyncio import Redis

from services.platform.announced import AnnouncedMemory
from services.platform.errors import PermissionDeniedError, UnauthenticatedError
from services.platform.flow import Scope
from services.platform.outages import REDIS_OUTAGES, REDIS_REFUSALS

ISSUER = "a4co-identity"
AUDIENCE = "a4co"
ALGORITHM = "EdDSA"
REVOKED_KEY = "a4co:revoked:{sid}"
ENDED_KEPT = 10_000  # sessions ended, remembered by each process


class Role(enum.StrEnum):
    """What a user may do; the `role` claim of a token."""

    CUSTOMER = "customer"
    ARTISAN = "artisan"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of the current request."""

    user_id: str
    role: Role
    session_id: str
    expires_at: float
    token: str = ""

    def require(self, *roles: Role) -> None:
        """Raise PermissionDenied unless the caller has one of `roles` (admins always pass)."""
        if self.role is not Role.ADMIN and self.role not in roles:
            wanted = " or ".join(r.value for r in roles)
            raise PermissionDeniedError("ROLE_REQUIRED", f"this call needs the {wanted} role")

    def require_self_or_admin(self, user_id: str) -> None:
        """Raise PermissionDenied unless the caller is `user_id` or an admin."""
        if self.role is not Role.ADMIN and self.user_id != user_id:
            raise PermissionDeniedError("NOT_OWNER", "this resource belongs to someone else")


class Revocations(Protocol):
    """Where revoked sessions are recorded."""

    async def is_revoked(self, session_id: str) -> bool:
        """Whether the session was ended."""

    async def revoke(self, session_id: str, ttl_s: int) -> None:
        """End the session for at least `ttl_s` seconds (the longest life of its tokens)."""

    async def missing(self, session_ids: list[str]) -> list[str]:
        """Those of `session_ids` whose revocation is not recorded (any more)."""


class RedisRevocations:
    """Revoked sessions as Redis keys with a TTL; shared by every service.

    Each revocation is also announced on a Redis channel in the same transaction; a process that
    follows the channel (`memory.follow`) remembers the answers it read (services/platform/announced.py),
    so the check that every authenticated call makes is not a Redis round trip each time. A
    revocation reaches a following process within the channel's delivery time, and at once in the
    process that revoked.
    """

    def __init__(self, redis: Redis, prefix: str = "", *, ended_kept: int = ENDED_KEPT) -> None:
        self._redis = redis
        self._prefix = f"{prefix}:" if prefix else ""
        self.memory: AnnouncedMemory[bool] = AnnouncedMemory(
            redis,
            f"{self._prefix}a4co:sessions:revoked",
            self._heard,
            supersedes=lambda new, old: new or not old,  # a revocation is never undone
        )
        # The sessions this process has ended or heard ended, latest last: a revocation is never
        # undone, so these need no look-up, however long ago. Unlike `memory`, whose answers are
        # read again from Redis after a moment, they hold while Redis refuses to record a
        # revocation (full, a replica) but still delivers its announcement (decision 36).
        self._ended: dict[str, None] = {}
        self._ended_kept = ended_kept

    def _heard(self, session_id: str) -> tuple[str, bool]:
        self._remember_ended(session_id)
        return session_id, True

    def _remember_ended(self, session_id: str) -> None:
        self._ended[session_id] = None
        if len(self._ended) > self._ended_kept:
            del self._ended[next(iter(self._ended))]

    def _key(self, session_id: str) -> str:
        return self._prefix + REVOKED_KEY.format(sid=session_id)

    async def is_revoked(self, session_id: str) -> bool:
        """Whether the session was ended."""
        if session_id in self._ended:
            return True
        revoked = self.memory.get(session_id)
        if revoked is None:
            revoked = bool(await self._redis.exists(self._key(session_id)))
            self.memory.remember(session_id, revoked)
        return revoked

    async def revoke(self, session_id: str, ttl_s: int) -> None:
        """End the session, and announce it. When Redis refuses to record it (full, a replica),
        it is announced all the same, which such a Redis delivers, and the refusal raised, for the
        caller to record it again once Redis takes writes."""
        self._remember_ended(session_id)
        try:
            async with self._redis.pipeline(transaction=True) as tx:
                tx.set(self._key(session_id), "1", ex=max(1, ttl_s))
                tx.publish(self.memory.channel, session_id)
                await tx.execute()
        except REDIS_REFUSALS:
            with contextlib.suppress(*REDIS_OUTAGES):
                await self._redis.publish(self.memory.channel, session_id)
            raise

    async def missing(self, session_ids: list[str]) -> list[str]:
        """Looked up in Redis itself, with one round trip: a process's memory may still hold what
        Redis lost."""
        if not session_ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for session_id in session_ids:
                pipe.exists(self._key(session_id))
            found = await pipe.execute()
        return [session_id for session_id, there in zip(session_ids, found, strict=True) if not there]


def generate_keypair() -> tuple[str, str]:
    """A new Ed25519 key pair as (private PEM, public PEM)."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


class TokenIssuer:
    """Signs access tokens; only identity holds one."""

    def __init__(self, private_pem: str, *, ttl_s: int = 900) -> None:
        key = serialization.load_pem_private_key(private_pem.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the signing key must be an Ed25519 private key")
        self._key = key
        self.ttl_s = ttl_s

    def issue(
        self, user_id: str, role: Role, session_id: str, *, now: float | None = None
    ) -> tuple[str, float]:
        """A signed access token and its expiry (epoch seconds)."""
        issued = now if now is not None else time.time()
        expires = issued + self.ttl_s
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": user_id,
            "role": role.value,
            "sid": session_id,
            "iat": int(issued),
            "exp": int(expires),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM), float(int(expires))


# Whether a principal's session has ended, asked of the store of record when Redis fails.
RevocationFallback = Callable[["Principal"], Awaitable[bool]]


class TokenVerifier:
    """Checks an access token's signature, audience, expiry and revocation."""

    def __init__(
        self,
        public_pem: str,
        revocations: Revocations,
        *,
        fallback: RevocationFallback | None = None,
        leeway_s: float = 5.0,
        cache_size: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        key = serialization.load_pem_public_key(public_pem.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the verification key must be an Ed25519 public key")
        self._key = key
        self._revocations = revocations
        self._fallback = fallback
        self._leeway_s = leeway_s
        self._clock = clock
        # Tokens whose signature and claims were already checked, oldest first. A client sends
        # the same token for up to 15 minutes: decoding and verifying it again on every call was
        # a sixth of an authenticated RPC's CPU. Expiry and revocation are still checked per call.
        self._verified: dict[str, Principal] = {}
        self._cache_size = cache_size

    async def verify(self, token: str) -> Principal:
        """The principal of a valid token; UnauthenticatedError for anything else."""
        principal = self._verified.get(token)
        if principal is None:
            principal = self._decode(token)
            if len(self._verified) >= self._cache_size:
                del self._verified[next(iter(self._verified))]
            self._verified[token] = principal
        elif self._clock() > principal.expires_at + self._leeway_s:
            del self._verified[token]
            raise UnauthenticatedError("TOKEN_EXPIRED", "the access token has expired")
        try:
            revoked = await self._revocations.is_revoked(principal.session_id)
        except REDIS_OUTAGES:
            if self._fallback is None:
                raise
            revoked = await self._fallback(principal)
        if revoked:
            raise UnauthenticatedError("TOKEN_REVOKED", "the session of this token has ended")
        return principal

    def valid_until(self, principal: Principal) -> float:
        """When `principal`'s token stops being accepted (epoch seconds): its expiry and the
        leeway allowed for clocks apart."""
        return principal.expires_at + self._leeway_s

    def _decode(self, token: str) -> Principal:
        """Signature, audience, issuer, expiry and required claims of a token not seen before."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=self._leeway_s,
                options={"require": ["exp", "sub", "sid", "role"]},
            )
        except jwt.ExpiredSignatureError:
            raise UnauthenticatedError("TOKEN_EXPIRED", "the access token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise UnauthenticatedError("TOKEN_INVALID", f"the access token is invalid: {exc}") from None
        try:
            role = Role(claims["role"])
        except ValueError:
            raise UnauthenticatedError("TOKEN_INVALID", "the access token names no known role") from None
        return Principal(claims["sub"], role, claims["sid"], float(claims["exp"]), token)


_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("a4co_principal", default=None)


def current_principal() -> Principal:
    """The authenticated caller; UnauthenticatedError when the call carried no token."""
    principal = _principal.get()
    if principal is None:
        raise UnauthenticatedError("TOKEN_MISSING", "this call needs an access token")
    return principal


def optional_principal() -> Principal | None:
    """The authenticated caller, if the call carried a token."""
    return _principal.get()


def principal_scope(principal: Principal | None) -> Scope[Principal | None]:
    """Run a block on behalf of `principal` (`with principal_scope(principal):`)."""
    return Scope(_principal, principal)
