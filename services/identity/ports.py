"""What identity's use cases need from the outside world."""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Protocol

from google.protobuf.message import Message

from services.identity.domain import SessionInfo, User
from services.platform.paging import Page


class Users(Protocol):
    """The user accounts."""

    async def add(self, user: User) -> bool:
        """Store a new user; False when the e-mail is taken."""

    async def by_id(self, user_id: str) -> User | None:
        """The user with this id."""

    async def by_email(self, email: str) -> User | None:
        """The user with this (normalised) e-mail."""

    async def set_password(self, user_id: str, password_hash: str) -> None:
        """Store a new password hash."""

    async def save_profile(self, user: User) -> User:
        """Store the editable fields; returns the user as stored."""

    async def erase(self, user_id: str, now: datetime) -> bool:
        """Close an account: erase its personal data and free its e-mail address; False when it was
        closed already."""


class Sessions(Protocol):
    """Login sessions and their refresh tokens."""

    async def start(
        self, session_id: str, user_id: str, refresh_hash: str, expires_at: datetime, user_agent: str = ""
    ) -> None:
        """Record a new session, with the user-agent of the client that started it."""

    async def page_of(self, user_id: str, now: datetime, page: Page) -> list[SessionInfo]:
        """A page of the user's sessions not ended nor expired by `now`, newest first."""

    async def owner(self, session_id: str) -> str | None:
        """Whose session this is; None for one never started."""

    async def current(self, session_id: str) -> tuple[str, str, datetime, bool] | None:
        """(user id, refresh hash, refresh expiry, revoked) of a session, locked for update."""

    async def rotate(self, session_id: str, refresh_hash: str, expires_at: datetime) -> None:
        """Replace a session's refresh token."""

    async def revoke_others(self, user_id: str, kept_session_id: str | None, reason: str) -> list[str]:
        """End every session of the user but `kept_session_id` (every one, with None); returns the
        ids of those it ended."""

    async def revoke(self, session_id: str, reason: str) -> None:
        """End a session."""

    async def revoked_since(self, moment: datetime) -> list[tuple[str, datetime]]:
        """(session id, when) of the sessions revoked after `moment`."""


class LoginAttempts(Protocol):
    """Password checks counted per e-mail address, in windows of time."""

    async def claim(self, email: str, now: datetime, window_s: float) -> tuple[int, datetime]:
        """Count one more check of `email`'s password, in a new window when its last one has ended
        by `now`; returns the checks counted in the window, this one included, and its start."""

    async def give_back(self, email: str) -> None:
        """Uncount one check of `email` that was claimed but not made."""

    async def clear(self, email: str) -> None:
        """Forget the checks of `email` (its password was right)."""

    async def forget_ended(self, now: datetime, window_s: float) -> int:
        """Forget every window that has ended by `now`; returns how many."""


class PasswordResets(Protocol):
    """Requests of codes that reset a password, per e-mail address (an account's or not)."""

    async def requested(self, email: str, since: datetime) -> tuple[int, datetime | None]:
        """How many codes `email` was sent after `since`, and when the first of them was; holds the
        address until the transaction ends, so that requests made at once are counted in turn."""

    async def add(
        self, email: str, user_id: str | None, code_hash: str | None, now: datetime, expires_at: datetime
    ) -> None:
        """Record a request; without an account, with neither user nor code."""

    async def claim(self, email: str, code_hash: str, now: datetime, wrong_allowed: int) -> str | None:
        """The user whose live code this is (unused, unexpired, the address under `wrong_allowed`
        wrong codes), the code now used; None when it is no live code of `email`."""

    async def give_back(self, email: str, code_hash: str) -> None:
        """Make a claimed code live again (it was not used)."""

    async def count_wrong(self, email: str) -> None:
        """Count a wrong code against the live codes of `email`."""

    async def spend(self, email: str, now: datetime) -> int:
        """Use up every live code of `email` (its password was reset); returns how many."""

    async def forget_address(self, email: str) -> None:
        """Forget every request of `email` (its account closed)."""

    async def forget_before(self, moment: datetime) -> int:
        """Forget the requests made before `moment`; returns how many."""


class Outbox(Protocol):
    """Events leave with the transaction."""

    async def add(self, event: Message, *, aggregate_id: str, ttl_s: float | None = None) -> None:
        """Publish `event` when the transaction commits (`ttl_s`: how long its message stays in
        its stream, for an event declared `expires`)."""


class UnitOfWork(Protocol):
    """One transaction over users, sessions, login attempts, reset codes and the outbox."""

    @property
    def users(self) -> Users:
        """The user accounts in this transaction."""

    @property
    def sessions(self) -> Sessions:
        """The sessions in this transaction."""

    @property
    def logins(self) -> LoginAttempts:
        """The password checks counted, in this transaction."""

    @property
    def resets(self) -> PasswordResets:
        """The requests of reset codes, in this transaction."""

    @property
    def outbox(self) -> Outbox:
        """The outbox of this transaction."""

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class PasswordHasher(Protocol):
    """Hashes and checks passwords, sign-ins before sign-ups; either raises HashingBusyError when
    the calls waiting ahead would take too long."""

    async def hash(self, password: str, *, sign_in: bool = False) -> str:
        """A hash to store, or with `sign_in` one that spends a check's time (no account)."""

    async def verify(self, password_hash: str, password: str) -> bool:
        """Whether `password` matches (a sign-in)."""
