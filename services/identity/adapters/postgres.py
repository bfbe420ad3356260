"""identity's tables through asyncpg."""

from __future__ import annotations

import json
from datetime import datetime

import asyncpg

from services.identity.domain import Address, SessionInfo, User
from services.platform.auth import Role
from services.platform.db import Connection, Queryable
from services.platform.events.outbox import OutboxWriter
from services.platform.paging import Page, page_sql
from services.platform.uow import PostgresUnitOfWork
from services.platform.validation import is_uuid


def _user(row: asyncpg.Record) -> User:
    address = json.loads(row["address"]) if isinstance(row["address"], str) else dict(row["address"])
    return User(
        user_id=str(row["user_id"]),
        email=row["email"],
        display_name=row["display_name"],
        role=Role(row["role"]),
        password_hash=row["password_hash"],
        phone_number=row["phone_number"],
        address=Address(**address),
        bio=row["bio"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        offboarded_at=row["offboarded_at"],
    )


class PostgresUsers:
    """Users in the `users` table."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(self, user: User) -> bool:
        """Insert; False when the e-mail is taken."""
        status = await self.conn.execute(
            "INSERT INTO users (user_id, email, display_name, role, password_hash, phone_number,"
            " address, bio)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8) ON CONFLICT (email) DO NOTHING",
            user.user_id,
            user.email,
            user.display_name,
            user.role.value,
            user.password_hash,
            user.phone_number,
            json.dumps(_address(user.address)),
            user.bio,
        )
        return status.endswith(" 1")

    async def by_id(self, user_id: str) -> User | None:
        """The user with this id (None for an id that is not even a UUID)."""
        if not is_uuid(user_id):
            return None
        row = await self.conn.fetchrow(
            "SELECT *, address::text AS address FROM users WHERE user_id = $1 AND deleted_at IS NULL", user_id
        )
        return _user(row) if row else None

    async def by_email(self, email: str) -> User | None:
        """The user with this e-mail."""
        row = await self.conn.fetchrow(
            "SELECT *, address::text AS address FROM users WHERE email = $1 AND deleted_at IS NULL", email
        )
        return _user(row) if row else None

    async def erase(self, user_id: str, now: datetime) -> bool:
        """Close an account: its personal data erased, its e-mail address freed (the row stays, for
        the sessions that refer to it, and so that its id is never given again); False when it
        was closed already."""
        status = await self.conn.execute(
            "UPDATE users SET email = user_id::text || '@deleted.invalid', display_name = '',"
            " password_hash = '', phone_number = '', address = '{}', bio = '', updated_at = $2,"
            " deleted_at = $2 WHERE user_id = $1 AND deleted_at IS NULL",
            user_id,
            now,
        )
        return status.endswith(" 1")

    async def set_password(self, user_id: str, password_hash: str) -> None:
        """Store a new password hash."""
        await self.conn.execute(
            "UPDATE users SET password_hash = $2, updated_at = now() WHERE user_id = $1",
            user_id,
            password_hash,
        )

    async def save_profile(self, user: User) -> User:
        """Store the editable fields."""
        row = await self.conn.fetchrow(
            "UPDATE users SET display_name = $2, phone_number = $3, address = $4::jsonb, bio = $5, "
            "updated_at = now() WHERE user_id = $1 RETURNING *, address::text AS address",
            user.user_id,
            user.display_name,
            user.phone_number,
            json.dumps(_address(user.address)),
            user.bio,
        )
        assert row is not None
        return _user(row)


def _address(address: Address) -> dict[str, str]:
    return {
        "street": address.street,
        "locality": address.locality,
        "province": address.province,
        "postal_code": address.postal_code,
        "country_code": address.country_code,
    }


class PostgresSessions:
    """Sessions in the `sessions` table."""

    def __init__(self, conn: Queryable) -> None:
        self.conn = conn

    async def ended(self, session_id: str) -> bool:
        """Whether the session was revoked, or is not one identity started."""
        if not is_uuid(session_id):
            return True
        live = await self.conn.fetchval(
            "SELECT revoked_at IS NULL FROM sessions WHERE session_id = $1", session_id
        )
        return live is not True

    async def start(
        self, session_id: str, user_id: str, refresh_hash: str, expires_at: datetime, user_agent: str = ""
    ) -> None:
        """Record a new session."""
        await self.conn.execute(
            "INSERT INTO sessions (session_id, user_id, refresh_hash, refresh_expires_at, user_agent)"
            " VALUES ($1, $2, $3, $4, $5)",
            session_id,
            user_id,
            refresh_hash,
            expires_at,
            user_agent,
        )

    async def page_of(self, user_id: str, now: datetime, page: Page) -> list[SessionInfo]:
        """A page of the user's sessions not ended (nor expired), newest first (`sessions_user_pages`);
        none for an id that is not even a UUID (a token identity did not issue)."""
        if not is_uuid(user_id):
            return []
        args: list[object] = [user_id, now]
        rest = page_sql(page, "created_at", "session_id", args)
        rows = await self.conn.fetch(
            "SELECT session_id, created_at, rotated_at, refresh_expires_at, user_agent FROM sessions"
            f" WHERE user_id = $1 AND revoked_at IS NULL AND refresh_expires_at > $2{rest}",
            *args,
        )
        return [
            SessionInfo(
                str(r["session_id"]),
                r["created_at"],
                r["rotated_at"],
                r["refresh_expires_at"],
                r["user_agent"],
            )
            for r in rows
        ]

    async def owner(self, session_id: str) -> str | None:
        """Whose session this is (None for one identity never started)."""
        if not is_uuid(session_id):
            return None
        user_id = await self.conn.fetchval("SELECT user_id FROM sessions WHERE session_id = $1", session_id)
        return None if user_id is None else str(user_id)

    async def current(self, session_id: str) -> tuple[str, str, datetime, bool] | None:
        """The session, locked until the transaction ends."""
        if not is_uuid(session_id):
            return None
        row = await self.conn.fetchrow(
            "SELECT user_id, refresh_hash, refresh_expires_at, revoked_at IS NOT NULL AS revoked "
            "FROM sessions WHERE session_id = $1 FOR UPDATE",
            session_id,
        )
        if row is None:
            return None
        return str(row["user_id"]), row["refresh_hash"], row["refresh_expires_at"], row["revoked"]

    async def rotate(self, session_id: str, refresh_hash: str, expires_at: datetime) -> None:
        """Replace the refresh token."""
        await self.conn.execute(
            "UPDATE sessions SET refresh_hash = $2, refresh_expires_at = $3, rotated_at = now()"
            " WHERE session_id = $1",
            session_id,
            refresh_hash,
            expires_at,
        )

    async def revoked_since(self, moment: datetime) -> list[tuple[str, datetime]]:
        """The sessions revoked after `moment`, oldest first (`sessions_revoked`, a partial index)."""
        rows = await self.conn.fetch(
            "SELECT session_id, revoked_at FROM sessions WHERE revoked_at > $1 ORDER BY revoked_at", moment
        )
        return [(str(r["session_id"]), r["revoked_at"]) for r in rows]

    async def revoke_others(self, user_id: str, kept_session_id: str | None, reason: str) -> list[str]:
        """End every session of the user not ended yet but `kept_session_id` (every one, with
        None); their ids."""
        rows = await self.conn.fetch(
            "UPDATE sessions SET revoked_at = now(), revoke_reason = $3"
            " WHERE user_id = $1 AND session_id IS DISTINCT FROM $2::uuid AND revoked_at IS NULL"
            " RETURNING session_id",
            user_id,
            kept_session_id,
            reason,
        )
        return [str(r["session_id"]) for r in rows]

    async def revoke(self, session_id: str, reason: str) -> None:
        """End the session (the first reason is kept); an id that is not a UUID names no session."""
        if not is_uuid(session_id):
            return
        await self.conn.execute(
            "UPDATE sessions SET revoked_at = coalesce(revoked_at, now()), "
            "revoke_reason = coalesce(revoke_reason, $2) WHERE session_id = $1",
            session_id,
            reason,
        )


class PostgresLoginAttempts:
    """Password checks in the `login_attempts` table."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def claim(self, email: str, now: datetime, window_s: float) -> tuple[int, datetime]:
        """One statement, so that checks made at once are each counted (a row lock orders them)."""
        row = await self.conn.fetchrow(
            "INSERT INTO login_attempts AS a (email, attempts, window_start) VALUES ($1, 1, $2::timestamptz)"
            " ON CONFLICT (email) DO UPDATE SET"
            " attempts = CASE WHEN a.window_start > $2 - make_interval(secs => $3::float8)"
            " THEN a.attempts + 1 ELSE 1 END,"
            " window_start = CASE WHEN a.window_start > $2 - make_interval(secs => $3::float8)"
            " THEN a.window_start ELSE $2 END"
            " RETURNING attempts, window_start",
            email,
            now,
            window_s,
        )
        assert row is not None  # an upsert returns its row
        return int(row["attempts"]), row["window_start"]

    async def give_back(self, email: str) -> None:
        """Uncount one check that was not made."""
        await self.conn.execute(
            "UPDATE login_attempts SET attempts = attempts - 1 WHERE email = $1 AND attempts > 0", email
        )

    async def clear(self, email: str) -> None:
        """Forget the checks."""
        await self.conn.execute("DELETE FROM login_attempts WHERE email = $1", email)

    async def forget_ended(self, now: datetime, window_s: float) -> int:
        """Delete the windows that have ended."""
        status = await self.conn.execute(
            "DELETE FROM login_attempts"
            " WHERE window_start <= $1::timestamptz - make_interval(secs => $2::float8)",
            now,
            window_s,
        )
        return int(status.rsplit(" ", 1)[1])


class PostgresPasswordResets:
    """Requests of reset codes in the `password_resets` table (live: unused, unexpired, and the
    address's wrong codes under the limit)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def requested(self, email: str, since: datetime) -> tuple[int, datetime | None]:
        """A transaction lock on the address orders the requests made at once (an address without
        an account has no row to lock)."""
        await self.conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('password_resets:' || $1, 0))", email
        )
        row = await self.conn.fetchrow(
            "SELECT count(*) AS requests, min(requested_at) AS first FROM password_resets"
            " WHERE email = $1 AND requested_at > $2",
            email,
            since,
        )
        assert row is not None  # an aggregate returns its row
        return int(row["requests"]), row["first"]

    async def add(
        self, email: str, user_id: str | None, code_hash: str | None, now: datetime, expires_at: datetime
    ) -> None:
        """Insert the request."""
        await self.conn.execute(
            "INSERT INTO password_resets (reset_id, email, user_id, code_hash, requested_at, expires_at)"
            " VALUES (gen_random_uuid(), $1, $2, $3, $4, $5)",
            email,
            user_id,
            code_hash,
            now,
            expires_at,
        )

    async def claim(self, email: str, code_hash: str, now: datetime, wrong_allowed: int) -> str | None:
        """One statement: of two calls with the same code, one claims it."""
        user_id = await self.conn.fetchval(
            "UPDATE password_resets SET used_at = $3"
            " WHERE email = $1 AND code_hash = $2 AND used_at IS NULL AND expires_at > $3"
            " AND wrong_codes < $4 RETURNING user_id",
            email,
            code_hash,
            now,
            wrong_allowed,
        )
        return None if user_id is None else str(user_id)

    async def give_back(self, email: str, code_hash: str) -> None:
        """The claim undone."""
        await self.conn.execute(
            "UPDATE password_resets SET used_at = NULL WHERE email = $1 AND code_hash = $2", email, code_hash
        )

    async def count_wrong(self, email: str) -> None:
        """On every unused code of the address, whichever was tried: the limit is the address's."""
        await self.conn.execute(
            "UPDATE password_resets SET wrong_codes = wrong_codes + 1 WHERE email = $1 AND used_at IS NULL",
            email,
        )

    async def spend(self, email: str, now: datetime) -> int:
        """The unused codes of the address used up."""
        status = await self.conn.execute(
            "UPDATE password_resets SET used_at = $2"
            " WHERE email = $1 AND used_at IS NULL AND code_hash IS NOT NULL",
            email,
            now,
        )
        return int(status.rsplit(" ", 1)[1])

    async def forget_address(self, email: str) -> None:
        """Delete every request of an address (its account closed)."""
        await self.conn.execute("DELETE FROM password_resets WHERE email = $1", email)

    async def forget_before(self, moment: datetime) -> int:
        """Delete the requests made before `moment`."""
        status = await self.conn.execute("DELETE FROM password_resets WHERE requested_at < $1", moment)
        return int(status.rsplit(" ", 1)[1])


class IdentityUnitOfWork(PostgresUnitOfWork):
    """Users, sessions, login attempts, reset codes and the outbox in one transaction."""

    users: PostgresUsers
    sessions: PostgresSessions
    logins: PostgresLoginAttempts
    resets: PostgresPasswordResets

    def bind(self, conn: Connection) -> None:
        """Build the repositories."""
        self.users = PostgresUsers(conn)
        self.sessions = PostgresSessions(conn)
        self.logins = PostgresLoginAttempts(conn)
        self.resets = PostgresPasswordResets(conn)


def unit_of_work_factory(pool: asyncpg.Pool, writer: OutboxWriter) -> IdentityUnitOfWork:
    """A new unit of work (one per use case call)."""
    return IdentityUnitOfWork(pool, writer)
