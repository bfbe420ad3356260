"""Users and sessions: pure rules, no I/O."""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime

from services.platform.addresses import check_address
from services.platform.auth import Role
from services.platform.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnauthenticatedError,
)
from services.platform.validation import MAX_EMAIL, Violations

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
SPANISH_PHONE = re.compile(r"^(?:\+34)?[6789]\d{8}$")
EDITABLE_FIELDS = frozenset({"display_name", "phone_number", "address", "bio"})
SIGNUP_ROLES = frozenset({Role.CUSTOMER, Role.ARTISAN})
PASSWORD_MIN, PASSWORD_MAX = 10, 128  # characters


class EmailTakenError(AlreadyExistsError):
    """An account with this e-mail exists."""

    def __init__(self) -> None:
        super().__init__("EMAIL_TAKEN", "an account with this e-mail address exists")


class InvalidCredentialsError(UnauthenticatedError):
    """Wrong e-mail or password; which of the two is not said."""

    def __init__(self) -> None:
        super().__init__("INVALID_CREDENTIALS", "wrong e-mail or password")


class TryAgainLaterError(ResourceExhaustedError):
    """A limit reached for a while: the message, the metadata's `retry_after_s` and a RetryInfo say
    how long, in whole seconds (at least one)."""

    def __init__(self, reason: str, what: str, retry_after_s: float) -> None:
        wait = max(1, math.ceil(retry_after_s))
        super().__init__(
            reason,
            f"{what}; try again in {wait} s",
            metadata={"retry_after_s": str(wait)},
            retry_delay_s=wait,
        )


class HashingBusyError(TryAgainLaterError):
    """identity hashes as many passwords as it can, and the calls waiting ahead would take longer
    than the wait it gives a call: refused before any work, so nothing was checked nor written."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__("HASHING_BUSY", "identity is checking as many passwords as it can", retry_after_s)


# Password checks per e-mail address within a window, wrong or right: past them, Login refuses the
# address until the window that began with its first check ends. A right password forgets the
# count. NIST SP 800-63B asks for at most 100 consecutive failures; OWASP for a lock that ends.
LOGIN_ATTEMPTS = 5
LOGIN_WINDOW_S = 15 * 60


class TooManyLoginAttemptsError(TryAgainLaterError):
    """An e-mail address had its password checked as often as a window allows; refused unchecked,
    so that guessing gets no faster by asking more (and costs no hashing)."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(
            "TOO_MANY_LOGIN_ATTEMPTS", "too many sign-in attempts for this e-mail address", retry_after_s
        )


# A forgotten password is reset with a code e-mailed to the account's address (decision 45): it works
# once, for 30 minutes; an address is sent at most 3 codes an hour, counted whether an account has it
# or not; after 5 wrong codes for an address its codes stop working. Ten characters of Crockford's
# base32 are 50 bits: the 15 guesses an hour those limits allow have a chance of about 2^-46.
RESET_CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32: no I, L, O nor U
RESET_CODE_LENGTH = 10
RESET_CODE_TTL_S = 30 * 60
RESET_REQUESTS = 3
RESET_REQUESTS_WINDOW_S = 60 * 60
RESET_WRONG_CODES = 5
_CODE_TYPED = str.maketrans({"O": "0", "I": "1", "L": "1", "-": None, " ": None, "\t": None})


class TooManyResetRequestsError(TryAgainLaterError):
    """An address was sent as many reset codes as an hour allows; refused whether an account has it
    or not, so that the refusal tells no one which addresses have accounts."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(
            "TOO_MANY_RESET_REQUESTS", "too many password reset codes for this e-mail address", retry_after_s
        )


class WrongResetCodeError(InvalidArgumentError):
    """A code that is no live code of the address: wrong, used, expired or past the wrong ones allowed;
    which of them is not said."""

    def __init__(self) -> None:
        super().__init__(
            [FieldViolation("code", "is not a code sent to this address, or it was used or has expired")],
            reason="RESET_CODE_REJECTED",
        )


@dataclass(frozen=True, slots=True)
class ResetCode:
    """A code that resets a password, as `RESET_CODE_LENGTH` characters of `RESET_CODE_ALPHABET`;
    only its hash is stored."""

    text: str

    @classmethod
    def new(cls) -> ResetCode:
        """A random code."""
        return cls("".join(secrets.choice(RESET_CODE_ALPHABET) for _ in range(RESET_CODE_LENGTH)))

    @classmethod
    def typed(cls, typed: str) -> ResetCode:
        """The code as a person typed it: letter case, spaces and dashes do not matter, and O, I
        and L are read as the digits they look like (Crockford's rule). It may not be a code at
        all; then it matches none."""
        return cls(typed.upper().translate(_CODE_TYPED))

    @property
    def hash(self) -> str:
        """What is stored: a SHA-256 of the code (random, so no salt is needed; it lives 30 minutes)."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    def __str__(self) -> str:
        """As e-mailed: two groups of five."""
        half = len(self.text) // 2
        return f"{self.text[:half]}-{self.text[half:]}"


def check_reset_request(email: str) -> None:
    """Raise InvalidArgumentError unless `email` may be an e-mail address."""
    v = Violations()
    if v.at_most(email, "email", MAX_EMAIL):
        v.check(bool(EMAIL.match(normalise_email(email))), "email", "must be an e-mail address")
    v.raise_if_any()


def check_reset(email: str, code: str, new_password: str) -> None:
    """Raise InvalidArgumentError naming every bad field of a password reset."""
    v = Violations()
    v.filled(email, "email", MAX_EMAIL)
    v.filled(code, "code", 4 * RESET_CODE_LENGTH)  # room for spaces and dashes
    v.length(new_password, "new_password", PASSWORD_MIN, PASSWORD_MAX)
    v.raise_if_any()


class AccountNotSelfServiceError(FailedPreconditionError):
    """An artisan's account holds a workshop and its sales until the workshop leaves the
    marketplace, an admin's the marketplace's operation: DeleteAccount closes a customer's, and an
    artisan's whose workshop has left (decisions 48 and 50)."""

    def __init__(self) -> None:
        super().__init__(
            "ACCOUNT_NOT_SELF_SERVICE",
            "only a customer's account, or an artisan's whose workshop has left the marketplace"
            " (OffboardArtisan), can be closed with DeleteAccount",
        )


def check_delete_account(current: str) -> None:
    """Raise InvalidArgumentError unless the password is given."""
    v = Violations()
    v.filled(current, "current_password", PASSWORD_MAX)
    v.raise_if_any()


class RefreshRejectedError(UnauthenticatedError):
    """The refresh token is unknown, expired, revoked, or was already used."""


@dataclass(frozen=True, slots=True)
class Address:
    """A postal address."""

    street: str = ""
    locality: str = ""
    province: str = ""
    postal_code: str = ""
    country_code: str = ""


@dataclass(frozen=True, slots=True)
class User:
    """A user's private profile."""

    user_id: str
    email: str
    display_name: str
    role: Role
    password_hash: str
    phone_number: str = ""
    address: Address = field(default_factory=Address)
    bio: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    offboarded_at: datetime | None = None  # an artisan's, once their workshop left the marketplace


def normalise_email(email: str) -> str:
    """E-mail addresses compare case-insensitively and without surrounding blanks."""
    return email.strip().lower()


def normalise_phone(phone: str) -> str:
    """A phone number without spaces, dashes or dots."""
    return re.sub(r"[\s\-.]", "", phone)


def check_signup(
    email: str, password: str, display_name: str, role: Role | None, phone: str, address: Address
) -> None:
    """Raise InvalidArgumentError naming every bad field of a sign-up."""
    v = Violations()
    if v.at_most(email, "email", MAX_EMAIL):
        v.check(bool(EMAIL.match(normalise_email(email))), "email", "must be an e-mail address")
    v.length(password, "password", PASSWORD_MIN, PASSWORD_MAX)
    v.length(display_name.strip(), "display_name", 2, 80)
    v.check(role in SIGNUP_ROLES, "role", "must be ROLE_CUSTOMER or ROLE_ARTISAN")
    if phone:
        v.check(
            bool(SPANISH_PHONE.match(normalise_phone(phone))),
            "phone_number",
            "must be a Spanish phone number",
        )
    check_address(v, address, "address")
    v.raise_if_any()


def check_new_password(current: str, new: str) -> None:
    """Raise InvalidArgumentError naming every bad field of a password change."""
    v = Violations()
    v.filled(current, "current_password", PASSWORD_MAX)
    if v.length(new, "new_password", PASSWORD_MIN, PASSWORD_MAX):
        v.check(new != current, "new_password", "must differ from the current password")
    v.raise_if_any()


def apply_profile_update(user: User, changes: User, paths: list[str]) -> tuple[User, list[str]]:
    """The user with the fields named in `paths` taken from `changes`; returns the changed paths."""
    v = Violations()
    if not paths:
        v.add("update_mask", "must name at least one field")
    for path in paths:
        v.check(
            path in EDITABLE_FIELDS,
            "update_mask",
            f"{path!r} cannot be changed; editable: {sorted(EDITABLE_FIELDS)}",
        )
    if "display_name" in paths:
        v.length(changes.display_name.strip(), "user.display_name", 2, 80)
    if "phone_number" in paths and changes.phone_number:
        v.check(
            bool(SPANISH_PHONE.match(normalise_phone(changes.phone_number))),
            "user.phone_number",
            "must be a Spanish phone number",
        )
    if "bio" in paths:
        v.length(changes.bio, "user.bio", 0, 1000)
    if "address" in paths:
        check_address(v, changes.address, "user.address")
    v.raise_if_any()
    updated = replace(
        user,
        display_name=changes.display_name.strip() if "display_name" in paths else user.display_name,
        phone_number=normalise_phone(changes.phone_number) if "phone_number" in paths else user.phone_number,
        address=changes.address if "address" in paths else user.address,
        bio=changes.bio if "bio" in paths else user.bio,
    )
    changed = [p for p in sorted(set(paths)) if getattr(updated, p) != getattr(user, p)]
    return updated, changed


MAX_USER_AGENT = 200  # characters of a client's user-agent kept with its session


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session not ended, as its user sees it."""

    session_id: str
    created_at: datetime
    refreshed_at: datetime
    expires_at: datetime
    user_agent: str


def user_agent(sent: str) -> str:
    """A client's user-agent as kept with its session: at most MAX_USER_AGENT characters, without
    control characters (it is the client's word, shown back to the user)."""
    return "".join(c for c in sent if c.isprintable())[:MAX_USER_AGENT]


@dataclass(frozen=True, slots=True)
class RefreshToken:
    """An opaque refresh token: `<session id>.<secret>`; only the secret's hash is stored."""

    session_id: str
    secret: str

    @classmethod
    def new(cls, session_id: str) -> RefreshToken:
        """A fresh secret for a session."""
        return cls(session_id, secrets.token_urlsafe(32))

    @classmethod
    def parse(cls, token: str) -> RefreshToken:
        """Split a token; RefreshRejectedError when it is not one of ours."""
        session_id, dot, secret = token.partition(".")
        if not dot or not session_id or not secret:
            raise RefreshRejectedError("REFRESH_TOKEN_INVALID", "the refresh token is malformed")
        return cls(session_id, secret)

    @property
    def hash(self) -> str:
        """What is stored: a SHA-256 of the secret (the secret is random, so no salt is needed)."""
        return hashlib.sha256(self.secret.encode()).hexdigest()

    def __str__(self) -> str:
        return f"{self.session_id}.{self.secret}"
