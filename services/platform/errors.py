"""Typed errors shared by domain code and the RPC layer; pure Python, no gRPC.

A domain raises one of these with an UPPER_SNAKE `reason` (such as `OUT_OF_STOCK`); the gRPC layer
turns it into a `google.rpc.Status` with the matching code, an `ErrorInfo` and, for bad input, a
`BadRequest` naming every offending field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field: its path in the request and what is wrong with it."""

    field: str
    description: str


class A4coError(Exception):
    """The root of every error a caller is meant to see."""

    kind: ClassVar[str] = "INTERNAL"

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        retry_delay_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})
        self.retry_delay_s = retry_delay_s  # sent as a RetryInfo: when trying again may succeed


class InvalidArgumentError(A4coError):
    """The request is malformed; `violations` names every bad field."""

    kind = "INVALID_ARGUMENT"

    def __init__(
        self, violations: list[FieldViolation], reason: str = "INVALID_REQUEST", message: str | None = None
    ) -> None:
        fields = ", ".join(v.field for v in violations)
        super().__init__(reason, message or f"invalid request: {fields}")
        self.violations = violations


class UnauthenticatedError(A4coError):
    """No valid credentials: missing, malformed, expired or revoked token."""

    kind = "UNAUTHENTICATED"


class PermissionDeniedError(A4coError):
    """Authenticated, but not allowed: wrong role or someone else's resource."""

    kind = "PERMISSION_DENIED"


class NotFoundError(A4coError):
    """The named resource does not exist."""

    kind = "NOT_FOUND"


class AlreadyExistsError(A4coError):
    """The resource to create exists already."""

    kind = "ALREADY_EXISTS"


class RequestIdReusedError(PermissionDeniedError):
    """A request id that another call used already (a request id is one call's): `used` says how,
    for example "for another product"."""

    def __init__(self, used: str) -> None:
        super().__init__("REQUEST_ID_REUSED", f"this request_id was used {used}")


class FailedPreconditionError(A4coError):
    """The system is not in a state that allows the operation (for example, too little stock)."""

    kind = "FAILED_PRECONDITION"


class AbortedError(A4coError):
    """The call conflicted with another and changed nothing: a deadlock or a serialization failure
    (the caller may retry it at once), or a change made since the caller read what it meant to
    change (AIP-154's etag; the caller reads again, then decides: artisans' REVISION_CHANGED)."""

    kind = "ABORTED"


class UnavailableError(A4coError):
    """A dependency is down; the caller may retry later."""

    kind = "UNAVAILABLE"


class ResourceExhaustedError(A4coError):
    """A limit is reached (calls served at once, attempts of a kind); the caller may retry later."""

    kind = "RESOURCE_EXHAUSTED"
