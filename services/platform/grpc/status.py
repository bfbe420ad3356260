"""Map typed errors to `google.rpc.Status` with `ErrorInfo`, `BadRequest` and `RetryInfo` details
(AIP-193), and tell a client's gRPC retries when to try again (gRFC A6's pushback)."""

from __future__ import annotations

from typing import NamedTuple

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.platform.errors import A4coError, InvalidArgumentError

CODES: dict[str, grpc.StatusCode] = {code.name: code for code in grpc.StatusCode}
# The trailer gRPC clients' retry policies read (gRFC A6, "Pushback"): the milliseconds to wait
# before the next attempt, or a negative number for none.
PUSHBACK = "grpc-retry-pushback-ms"


class _Answer(NamedTuple):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


class _Status(_Answer, grpc.Status):
    """A status to abort with (grpc.Status is an interface; grpc_status's own is private)."""


def to_status(error: A4coError, domain: str) -> grpc.Status:
    """The rich status of an error: its code, message, ErrorInfo, any field violations and when
    to try again."""
    code = CODES.get(error.kind, grpc.StatusCode.INTERNAL)
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=error.metadata)
    details = [_pack(info)]
    if isinstance(error, InvalidArgumentError):
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in error.violations
            ]
        )
        details.append(_pack(bad))
    if error.retry_delay_s is not None:
        delay = duration_pb2.Duration(seconds=error.retry_delay_s)
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=code.value[0], message=error.message, details=details)
    return rpc_status.to_status(status)


def with_pushback(status: grpc.Status, retry_delay_s: int, time_remaining_s: float | None) -> grpc.Status:
    """`status` with the pushback of an error that says when trying again may succeed: a client
    whose service config retries its code (UNAVAILABLE) waits that long, not its own backoff, and
    does not retry at all when that is past its deadline, so it hears at once why and when (the
    RetryInfo) rather than DEADLINE_EXCEEDED, and sends no attempt bound to be refused."""
    fits = time_remaining_s is None or retry_delay_s < time_remaining_s
    pushback = str(retry_delay_s * 1000) if fits else "-1"
    return _Status(status.code, status.details, (*status.trailing_metadata, (PUSHBACK, pushback)))


def internal_status(domain: str) -> grpc.Status:
    """A status for an unexpected failure; says nothing of its cause to the caller."""
    info = error_details_pb2.ErrorInfo(reason="INTERNAL", domain=domain)
    status = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error", details=[_pack(info)])
    return rpc_status.to_status(status)


def _pack(
    message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest | error_details_pb2.RetryInfo,
) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def details_of(
    error: grpc.aio.AioRpcError,
) -> tuple[error_details_pb2.ErrorInfo | None, list[tuple[str, str]]]:
    """The ErrorInfo and the (field, description) violations of a failed call, for clients."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    info, violations = None, []
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [(v.field, v.description) for v in bad.field_violations]
    return info, violations
