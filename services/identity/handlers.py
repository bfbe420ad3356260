"""identity's use cases, one function each."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from a4co.artisans.events.v1 import artisan_events_pb2 as artisan_events
from a4co.identity.events.v1 import identity_events_pb2 as events
from services.identity.domain import (
    LOGIN_ATTEMPTS,
    LOGIN_WINDOW_S,
    RESET_CODE_TTL_S,
    RESET_REQUESTS,
    RESET_REQUESTS_WINDOW_S,
    RESET_WRONG_CODES,
    AccountNotSelfServiceError,
    Address,
    EmailTakenError,
    HashingBusyError,
    InvalidCredentialsError,
    RefreshRejectedError,
    RefreshToken,
    ResetCode,
    SessionInfo,
    TooManyLoginAttemptsError,
    TooManyResetRequestsError,
    User,
    WrongResetCodeError,
    apply_profile_update,
    check_delete_account,
    check_new_password,
    check_reset,
    check_signup,
    normalise_email,
    normalise_phone,
    user_agent,
)
from services.identity.ports import PasswordHasher, UnitOfWork
from services.platform.auth import Principal, Revocations, Role, TokenIssuer, TokenVerifier
from services.platform.errors import (
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from services.platform.events.consumer import HandlerContext
from services.platform.outages import REDIS_OUTAGES
from services.platform.paging import Page
from services.platform.resilience import every
from services.platform.timestamps import to_timestamp

log = logging.getLogger(__name__)
REVOCATIONS_CHECK_S = 10.0

EVENT_ROLES = {
    Role.CUSTOMER: events.USER_ROLE_CUSTOMER,
    Role.ARTISAN: events.USER_ROLE_ARTISAN,
    Role.ADMIN: events.USER_ROLE_ADMIN,
}


@dataclass(frozen=True, slots=True)
class Deps:
    """What the use cases are built with, in the composition root."""

    uow: Callable[[], UnitOfWork]
    hasher: PasswordHasher
    issuer: TokenIssuer
    verifier: TokenVerifier
    revocations: Revocations
    refresh_ttl_s: int = 30 * 24 * 3600
    login_attempts: int = LOGIN_ATTEMPTS  # password checks per e-mail address per window
    login_window_s: float = LOGIN_WINDOW_S
    reset_requests: int = RESET_REQUESTS  # codes sent to one e-mail address per window
    reset_window_s: float = RESET_REQUESTS_WINDOW_S
    reset_code_ttl_s: float = RESET_CODE_TTL_S
    reset_wrong_codes: int = RESET_WRONG_CODES  # wrong codes for an address before its codes stop


@dataclass(frozen=True, slots=True)
class Tokens:
    """A session's token pair with expiries."""

    access_token: str
    access_expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime


async def register(
    deps: Deps,
    email: str,
    password: str,
    display_name: str,
    role: Role | None,
    phone: str,
    address: Address,
    client: str = "",
) -> tuple[User, Tokens]:
    """Create an account, announce it (UserRegistered) and start its first session: the new
    user is signed in without a second hashing of the password, which a Login would cost. A taken
    address is refused before the password is hashed (the answer says it is taken either way)."""
    check_signup(email, password, display_name, role, phone, address)
    assert role is not None
    async with deps.uow() as uow:
        if await uow.users.by_email(normalise_email(email)) is not None:
            raise EmailTakenError()
    new = User(
        user_id=str(uuid.uuid4()),
        email=normalise_email(email),
        display_name=display_name.strip(),
        role=role,
        password_hash=await deps.hasher.hash(password),
        phone_number=normalise_phone(phone),
        address=address,
    )
    async with deps.uow() as uow:
        if not await uow.users.add(new):
            raise EmailTakenError()
        stored = await uow.users.by_id(new.user_id)
        assert stored is not None
        await uow.outbox.add(
            events.UserRegistered(
                user_id=stored.user_id,
                email=stored.email,
                display_name=stored.display_name,
                role=EVENT_ROLES[stored.role],
                locality=stored.address.locality,
                register_time=to_timestamp(stored.created_at),
            ),
            aggregate_id=stored.user_id,
        )
        tokens = await _start_session(deps, uow, stored, client)
    return stored, tokens


async def login(deps: Deps, email: str, password: str, client: str = "") -> tuple[User, Tokens]:
    """Check the credentials and start a session; at most `login_attempts` checks of one e-mail
    address per window, counted before the check (and committed), so that checks made at once
    are counted too. Addresses without an account are counted alike: no account probing. A check
    refused because identity's hashing is busy (HashingBusyError) is given back: it was not made."""
    address, now = normalise_email(email), datetime.now(UTC)
    async with deps.uow() as uow:
        checks, since = await uow.logins.claim(address, now, deps.login_window_s)
        user = await uow.users.by_email(address) if checks <= deps.login_attempts else None
    if checks > deps.login_attempts:
        ends = since + timedelta(seconds=deps.login_window_s)
        raise TooManyLoginAttemptsError((ends - now).total_seconds())
    try:
        if user is None:
            await deps.hasher.hash(password, sign_in=True)  # a wrong password's cost: no account probing
            raise InvalidCredentialsError()
        right = await deps.hasher.verify(user.password_hash, password)
    except HashingBusyError:  # refused before the check: it does not count
        async with deps.uow() as uow:
            await uow.logins.give_back(address)
        raise
    if not right:
        raise InvalidCredentialsError()
    async with deps.uow() as uow:
        await uow.logins.clear(address)
        tokens = await _start_session(deps, uow, user, client)
    return user, tokens


async def forget_ended_windows(deps: Deps, every_s: float = 300.0) -> None:
    """Delete the login windows that have ended, and the reset requests older than both the
    window they are counted in and a code's life, every `every_s` (a background job: the rows of
    addresses tried and never signed in with, or asked for in vain, would otherwise stay)."""

    async def forget() -> None:
        now = datetime.now(UTC)
        async with deps.uow() as uow:
            await uow.logins.forget_ended(now, deps.login_window_s)
            await uow.resets.forget_before(
                now - timedelta(seconds=max(deps.reset_window_s, deps.reset_code_ttl_s))
            )

    await every(every_s, forget, "forgetting the ended login windows and reset requests")


async def record_lost_revocations(deps: Deps) -> list[str]:
    """Record again in Redis the revocations of sessions ended within the life of an access token
    that Redis no longer holds (restarted without its data, flushed, or evicting keys with a TTL);
    returns their ids. PostgreSQL's `sessions` is the record; Redis is what every service checks."""
    lifetime = _revoked_for_s(deps)
    now = datetime.now(UTC)
    async with deps.uow() as uow:
        ended = dict(await uow.sessions.revoked_since(now - timedelta(seconds=lifetime)))
    lost = await deps.revocations.missing(list(ended))
    for session_id in lost:
        remaining = lifetime - (now - ended[session_id]).total_seconds()
        await deps.revocations.revoke(session_id, max(1, int(remaining) + 1))
    if lost:
        log.warning("recorded %d revocations again that Redis had lost", len(lost))
    return lost


async def keep_revocations_recorded(deps: Deps, every_s: float = REVOCATIONS_CHECK_S) -> None:
    """`record_lost_revocations` every `every_s` (a background job): a revocation Redis lost is
    honoured again within that time."""
    await every(every_s, lambda: record_lost_revocations(deps), "checking the revocations in Redis")


def _revoked_for_s(deps: Deps) -> int:
    """How long a revocation is kept: the longest life of the session's access tokens, and a minute."""
    return deps.issuer.ttl_s + 60


async def _start_session(deps: Deps, uow: UnitOfWork, user: User, client: str = "") -> Tokens:
    """A new session of `user`, started by a client with this user-agent, stored in `uow`, and its
    tokens."""
    session_id = str(uuid.uuid4())
    refresh = RefreshToken.new(session_id)
    refresh_expires = datetime.now(UTC) + timedelta(seconds=deps.refresh_ttl_s)
    await uow.sessions.start(session_id, user.user_id, refresh.hash, refresh_expires, user_agent(client))
    access, access_expires = deps.issuer.issue(user.user_id, user.role, session_id)
    return Tokens(access, datetime.fromtimestamp(access_expires, UTC), str(refresh), refresh_expires)


async def refresh_tokens(deps: Deps, refresh_token: str) -> Tokens:
    """Exchange a refresh token for a new pair; a reused token ends the whole session."""
    presented = RefreshToken.parse(refresh_token)
    async with deps.uow() as uow:
        session = await uow.sessions.current(presented.session_id)
        if session is None:
            raise RefreshRejectedError("REFRESH_TOKEN_INVALID", "unknown refresh token")
        user_id, stored_hash, expires_at, revoked = session
        if revoked:
            raise RefreshRejectedError("SESSION_REVOKED", "the session has ended")
        if stored_hash != presented.hash:
            # An old token presented again: someone else may hold the new one. End the session.
            await uow.sessions.revoke(presented.session_id, "refresh token reused")
            user = None
        else:
            if expires_at <= datetime.now(UTC):
                raise RefreshRejectedError("REFRESH_TOKEN_EXPIRED", "the refresh token has expired")
            user = await uow.users.by_id(user_id)
            fresh = RefreshToken.new(presented.session_id)
            fresh_expires = datetime.now(UTC) + timedelta(seconds=deps.refresh_ttl_s)
            await uow.sessions.rotate(presented.session_id, fresh.hash, fresh_expires)
    if user is None:
        await _revoke_in_redis(deps, presented.session_id)
        raise RefreshRejectedError(
            "REFRESH_TOKEN_REUSED", "this refresh token was already used; the session has ended"
        )
    access, access_expires = deps.issuer.issue(user.user_id, user.role, presented.session_id)
    return Tokens(access, datetime.fromtimestamp(access_expires, UTC), str(fresh), fresh_expires)


async def logout(deps: Deps, principal: Principal) -> None:
    """End the caller's session: its tokens stop working at once, everywhere."""
    await _revoke_in_redis(deps, principal.session_id)
    async with deps.uow() as uow:
        await uow.sessions.revoke(principal.session_id, "logout")


async def change_password(deps: Deps, principal: Principal, current: str, new: str) -> int:
    """Replace the caller's password, the current one checked as a Login checks it (and counted
    alike), end every other session of the account and announce it (PasswordChanged); returns
    how many sessions it ended."""
    check_new_password(current, new)
    user, new_hash = await _password_checked(deps, principal.user_id, current, new)
    async with deps.uow() as uow:
        await uow.users.set_password(user.user_id, new_hash)
        ended = await uow.sessions.revoke_others(user.user_id, principal.session_id, "password changed")
        await uow.logins.clear(user.email)
        await uow.outbox.add(
            events.PasswordChanged(
                user_id=user.user_id, ended_sessions=len(ended), change_time=to_timestamp(datetime.now(UTC))
            ),
            aggregate_id=user.user_id,
        )
    await _revoke_in_redis(deps, *ended)
    return len(ended)


async def _password_checked(
    deps: Deps, user_id: str, current: str, new: str = "", allowed: Callable[[User], None] | None = None
) -> tuple[User, str]:
    """The signed-in user whose `current` password was checked as Login checks it (and counted
    alike), and the hash of `new` when given; `allowed` may refuse the user before any check.
    INVALID_ARGUMENT naming current_password when it is wrong."""
    now = datetime.now(UTC)
    async with deps.uow() as uow:  # the account and its check counted, as Login's, in one transaction
        user = await uow.users.by_id(user_id)
        if user is None:
            raise NotFoundError("USER_NOT_FOUND", f"no user {user_id}")
        if allowed is not None:
            allowed(user)
        checks, since = await uow.logins.claim(user.email, now, deps.login_window_s)
    if checks > deps.login_attempts:
        raise TooManyLoginAttemptsError(
            (since + timedelta(seconds=deps.login_window_s) - now).total_seconds()
        )
    try:
        right = await deps.hasher.verify(user.password_hash, current)
        new_hash = await deps.hasher.hash(new) if right and new else ""
    except HashingBusyError:  # refused before the change: the check does not count
        async with deps.uow() as uow:
            await uow.logins.give_back(user.email)
        raise
    if not right:
        raise InvalidArgumentError([FieldViolation("current_password", "is not this account's password")])
    return user, new_hash


def _closable(user: User) -> None:
    """A customer's account, or an artisan's whose workshop has left the marketplace."""
    if not (user.role is Role.CUSTOMER or (user.role is Role.ARTISAN and user.offboarded_at is not None)):
        raise AccountNotSelfServiceError()


async def delete_account(
    deps: Deps, principal: Principal, current: str, user_id: str = ""
) -> tuple[datetime, int]:
    """Close an account for good, a customer's or an offboarded artisan's: the caller's, its
    password checked as ChangePassword checks it, or the one an admin names (`user_id`),
    unchecked. Erase its personal data, end every session, forget its reset codes and Login
    checks, and announce it (UserDeleted) for the services that keep some of it. Returns when, and
    how many sessions it ended."""
    target = user_id or principal.user_id
    principal.require_self_or_admin(target)
    if target == principal.user_id:
        check_delete_account(current)
        user, _ = await _password_checked(deps, target, current, allowed=_closable)
    else:
        async with deps.uow() as uow:
            found = await uow.users.by_id(target)
        if found is None:
            raise NotFoundError("USER_NOT_FOUND", f"no user {target}")
        _closable(found)
        user = found
    now = datetime.now(UTC)
    async with deps.uow() as uow:
        if not await uow.users.erase(user.user_id, now):  # closed meanwhile, by another call
            raise NotFoundError("USER_NOT_FOUND", f"no user {user.user_id}")
        ended = await uow.sessions.revoke_others(user.user_id, None, "account deleted")
        await uow.logins.clear(user.email)
        await uow.resets.forget_address(user.email)
        await uow.outbox.add(
            events.UserDeleted(
                user_id=user.user_id, role=EVENT_ROLES[user.role], delete_time=to_timestamp(now)
            ),
            aggregate_id=user.user_id,
        )
    await _revoke_in_redis(deps, *ended)
    return now, len(ended)


async def on_artisan_offboarded(
    deps: Deps, event: artisan_events.ArtisanOffboarded, ctx: HandlerContext
) -> None:
    """An artisan whose workshop left the marketplace may close their account (decision 50)."""
    try:
        user_id = uuid.UUID(event.artisan_id)
    except ValueError:  # every account's id is a UUID: this artisan has none here
        log.warning("ArtisanOffboarded for %r, which is no account's id", event.artisan_id)
        return
    await ctx.conn.execute(
        "UPDATE users SET offboarded_at = $2 WHERE user_id = $1 AND offboarded_at IS NULL",
        user_id,
        event.offboard_time.ToDatetime(tzinfo=UTC),
    )


async def request_password_reset(deps: Deps, email: str) -> datetime:
    """Send the account with this address a code that resets its password (PasswordResetRequested,
    which notifications e-mails); returns when the code stops working. An address without an
    account is answered alike and counted alike: at most `reset_requests` per window, then
    TooManyResetRequestsError."""
    address, now = normalise_email(email), datetime.now(UTC)
    expires = now + timedelta(seconds=deps.reset_code_ttl_s)
    async with deps.uow() as uow:
        sent, first = await uow.resets.requested(address, now - timedelta(seconds=deps.reset_window_s))
        if sent >= deps.reset_requests:
            assert first is not None
            raise TooManyResetRequestsError(
                (first + timedelta(seconds=deps.reset_window_s) - now).total_seconds()
            )
        user = await uow.users.by_email(address)
        code = ResetCode.new() if user is not None else None
        await uow.resets.add(
            address, user.user_id if user else None, code.hash if code else None, now, expires
        )
        if user is not None and code is not None:
            await uow.outbox.add(
                events.PasswordResetRequested(
                    user_id=user.user_id,
                    email=user.email,
                    display_name=user.display_name,
                    code=str(code),
                    expire_time=to_timestamp(expires),
                ),
                aggregate_id=user.user_id,
                ttl_s=deps.reset_code_ttl_s,  # the event leaves the stream when the code expires
            )
    return expires


async def reset_password(
    deps: Deps, email: str, code: str, new_password: str, client: str = ""
) -> tuple[User, Tokens, int]:
    """Set a new password with a live code of the address, end every session of the account, and
    start a new one; returns the user, the new session's tokens and how many sessions it ended.

    The code is claimed (used) before the new password is hashed, so that two calls with it
    cannot both reset; a hash refused because identity is busy gives the claim back. A wrong
    code counts against the address's codes (WrongResetCodeError, the same for an address
    without an account)."""
    check_reset(email, code, new_password)
    address, presented, now = normalise_email(email), ResetCode.typed(code), datetime.now(UTC)
    async with deps.uow() as uow:
        user_id = await uow.resets.claim(address, presented.hash, now, deps.reset_wrong_codes)
        if user_id is None:
            await uow.resets.count_wrong(address)
    if user_id is None:
        raise WrongResetCodeError()
    try:
        new_hash = await deps.hasher.hash(new_password)
    except HashingBusyError:
        async with deps.uow() as uow:
            await uow.resets.give_back(address, presented.hash)
        raise
    async with deps.uow() as uow:
        user = await uow.users.by_id(user_id)
        if user is None:  # the account was closed since the code was claimed
            raise WrongResetCodeError()
        await uow.users.set_password(user.user_id, new_hash)
        ended = await uow.sessions.revoke_others(user.user_id, None, "password reset")
        await uow.resets.spend(address, now)  # the other codes sent meanwhile
        await uow.logins.clear(address)  # the owner of the mailbox may sign in at once
        await uow.outbox.add(
            events.PasswordChanged(
                user_id=user.user_id,
                ended_sessions=len(ended),
                change_time=to_timestamp(datetime.now(UTC)),
                reset=True,
            ),
            aggregate_id=user.user_id,
        )
        tokens = await _start_session(deps, uow, user, client)
    await _revoke_in_redis(deps, *ended)
    return user, tokens, len(ended)


async def list_sessions(deps: Deps, principal: Principal, page: Page) -> list[SessionInfo]:
    """A page of the caller's sessions not ended, newest first."""
    async with deps.uow() as uow:
        return await uow.sessions.page_of(principal.user_id, datetime.now(UTC), page)


async def end_session(deps: Deps, principal: Principal, session_id: str) -> None:
    """End one of the caller's sessions, as Logout ends the caller's own (again, if it has ended);
    NOT_FOUND for a session that is not theirs, whether it exists or not."""
    async with deps.uow() as uow:
        if await uow.sessions.owner(session_id) != principal.user_id:
            raise NotFoundError("SESSION_NOT_FOUND", f"no session {session_id} of yours")
        await uow.sessions.revoke(session_id, "ended by its user")
    await _revoke_in_redis(deps, session_id)


async def _revoke_in_redis(deps: Deps, *session_ids: str) -> None:
    """Record sessions' ends where every service checks them. While Redis fails, the end recorded
    in `sessions` is what counts: the services ask identity then (decision 34), and
    `record_lost_revocations` writes it to Redis once Redis answers."""
    for session_id in session_ids:
        try:
            await deps.revocations.revoke(session_id, _revoked_for_s(deps))
        except REDIS_OUTAGES as exc:
            log.warning(
                "session %s ended while Redis fails (%r); recorded there once it answers", session_id, exc
            )


async def get_profile(deps: Deps, principal: Principal, user_id: str, email: str = "") -> User:
    """A user's private profile, for that user or an admin: by id (the caller's when empty), or
    by e-mail address. Anyone but an admin naming an address other than their own is refused
    (PERMISSION_DENIED) without learning whether an account has it."""
    if email:
        address = normalise_email(email)
        async with deps.uow() as uow:
            if principal.role is Role.ADMIN:
                user = await uow.users.by_email(address)
            else:
                user = await uow.users.by_id(principal.user_id)
                if user is not None and user.email != address:
                    raise PermissionDeniedError("NOT_OWNER", "only an admin looks users up by address")
        if user is None:
            raise NotFoundError("USER_NOT_FOUND", f"no account has the address {address}")
        return user
    target = user_id or principal.user_id
    principal.require_self_or_admin(target)
    async with deps.uow() as uow:
        user = await uow.users.by_id(target)
    if user is None:
        raise NotFoundError("USER_NOT_FOUND", f"no user {target}")
    return user


async def update_profile(
    deps: Deps, principal: Principal, user_id: str, changes: User, paths: list[str]
) -> User:
    """Change the fields named in `paths`; announce the change (ProfileUpdated)."""
    target = user_id or principal.user_id
    principal.require_self_or_admin(target)
    async with deps.uow() as uow:
        user = await uow.users.by_id(target)
        if user is None:
            raise NotFoundError("USER_NOT_FOUND", f"no user {target}")
        updated, changed = apply_profile_update(user, changes, paths)
        if not changed:
            return user
        stored = await uow.users.save_profile(updated)
        await uow.outbox.add(
            events.ProfileUpdated(
                user_id=stored.user_id,
                display_name=stored.display_name,
                bio=stored.bio,
                locality=stored.address.locality,
                changed_fields=changed,
                update_time=to_timestamp(stored.updated_at),
            ),
            aggregate_id=stored.user_id,
        )
    return stored


async def ensure_admin(deps: Deps, email: str, password: str) -> User:
    """Create the operator account on first start (from settings); a no-op when it exists."""
    async with deps.uow() as uow:
        existing = await uow.users.by_email(normalise_email(email))
    if existing is not None:
        return existing
    check_signup(email, password, "Administrador", Role.CUSTOMER, "", Address())
    admin = User(
        user_id=str(uuid.uuid4()),
        email=normalise_email(email),
        display_name="Administrador",
        role=Role.ADMIN,
        password_hash=await deps.hasher.hash(password),
    )
    async with deps.uow() as uow:
        await uow.users.add(admin)
        stored = await uow.users.by_email(admin.email)
    assert stored is not None
    return stored
