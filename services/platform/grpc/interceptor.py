"""The platform layer every service runs around each call: flow, authentication, validation,
errors, metrics and a JSON access log (written in batches: `access_log.py`).

A server-streaming call has the same layer, and three rules of its own: it is not one of the calls
in flight that `max_in_flight` bounds but one of at most `max_streams` open streams; it lives no
longer than its caller's token (checked again every `stream_recheck_s`, so a Logout ends it
within that time); and it ends with UNAVAILABLE as soon as the server begins to stop, instead of
holding the stop for its grace period.

Per-method behaviour is data: a `MethodPolicy` says whether the method is public, which roles may
call it and which validator checks its request before the handler runs.

The layer wraps each method handler once, when the servicer is registered, rather than being a
`grpc.aio.ServerInterceptor`: an interceptor runs a coroutine pipeline and builds a new method
handler on every call: with OpenTelemetry's interceptor, about a tenth of the inventory process's
CPU under CheckStock load (docs/performance-history.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError, Message
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from prometheus_client import Counter, Gauge, Histogram

from services.platform.auth import Principal, Role, TokenVerifier, principal_scope
from services.platform.errors import (
    A4coError,
    AbortedError,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from services.platform.flow import Flow, flow_scope, new_id
from services.platform.grpc.access_log import AccessLog
from services.platform.grpc.deadline import caller_deadline_scope
from services.platform.grpc.status import internal_status, to_status, with_pushback
from services.platform.labels import Children
from services.platform.outages import DATABASE_CONFLICTS, DEPENDENCY_OUTAGES
from services.platform.telemetry import tracing_enabled

FIRST = asyncio.FIRST_COMPLETED

log = logging.getLogger("a4co.access")

RPC_HANDLED = Counter(
    "a4co_grpc_server_handled_total",
    "RPCs completed by the server, by method and status code.",
    ["service", "method", "code"],
)
# Seconds; the callers' histogram (grpc/client.py) uses the same, so that the two compare.
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.5, 1.0, 2.5)
RPC_DURATION = Histogram(
    "a4co_grpc_server_handling_seconds",
    "Time to handle a unary RPC on the server.",
    ["service", "method"],
    buckets=RPC_BUCKETS,
)
STREAMS_OPEN = Gauge(
    "a4co_grpc_server_streams", "Server-streaming RPCs open now, by method.", ["service", "method"]
)
STREAM_MESSAGES = Counter(
    "a4co_grpc_server_stream_messages_sent_total",
    "Messages sent on server-streaming RPCs, by method.",
    ["service", "method"],
)
# A stream's caller is checked again this often (its session may have ended), and at its token's
# expiry.
STREAM_RECHECK_S = 5.0

# What a call is answered with a status for: the platform's typed errors, the outages of
# PostgreSQL and Redis (UNAVAILABLE), and transactions PostgreSQL rolled back for a conflict with
# another (class 40: a deadlock, a serialization failure; ABORTED).
ANSWERED: tuple[type[BaseException], ...] = (
    A4coError,
    *DEPENDENCY_OUTAGES,
    *DATABASE_CONFLICTS,
)


def dependency_failure(method: str, exc: BaseException) -> A4coError:
    """The answer to a dependency failing under a call: the caller may retry later, or at once
    when its transaction was rolled back for a conflict with another."""
    if isinstance(exc, DATABASE_CONFLICTS):
        log.warning("%s: the transaction conflicted with another: %r", method, exc)
        return AbortedError(
            "TRANSACTION_CONFLICT", "the call conflicted with a concurrent one and changed nothing; try again"
        )
    log.warning("%s: a dependency is unavailable: %r", method, exc)
    return UnavailableError("DEPENDENCY_UNAVAILABLE", "a dependency of this service is unavailable")


Validator = Callable[[Any], None]
Context = grpc.aio.ServicerContext[Any, Any]
Behavior = Callable[[Any, Context], Awaitable[Message]]
StreamBehavior = Callable[[Any, Context], AsyncIterator[Message]]


@dataclass(frozen=True, slots=True)
class MethodPolicy:
    """Who may call a method and how its request is checked."""

    public: bool = False
    roles: frozenset[Role] = field(default_factory=frozenset)
    validator: Validator | None = None


# A caller's `x-correlation-id` is copied into every log line and event of its flow: one longer
# than this, or not printable ASCII, is ignored, and the call starts a flow of its own.
MAX_CORRELATION_ID = 128


def caller_correlation(value: str | None) -> str | None:
    """The caller's correlation id if it can be one (UUIDs and W3C trace ids can), else None."""
    if value and len(value) <= MAX_CORRELATION_ID and value.isascii() and value.isprintable():
        return value
    return None


@dataclass(frozen=True, slots=True)
class Malformed:
    """What a request's bytes parse to when they are not its method's message (a string that is
    not UTF-8, a corrupt wire format): refused as bad input, where gRPC would answer UNKNOWN."""

    detail: str


def _tolerant(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """`parse`, returning Malformed for bytes it cannot parse instead of raising."""

    def tolerant(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return Malformed(str(exc))

    return tolerant


def _check(policy: MethodPolicy, request: Message | Malformed) -> None:
    """InvalidArgumentError for a request that did not parse, or that its validator refuses."""
    if isinstance(request, Malformed):
        raise InvalidArgumentError([], "MALFORMED_REQUEST", f"malformed request: {request.detail}")
    if policy.validator is not None:
        policy.validator(request)


def bearer_token(metadata: Mapping[str, str]) -> str | None:
    """The token of an `authorization: Bearer …` header, if any."""
    value = metadata.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class PlatformInterceptor:
    """Wraps every unary and server-streaming method listed in `policies`; other methods (health,
    reflection) pass."""

    def __init__(
        self,
        *,
        service: str,
        domain: str,
        policies: Mapping[str, MethodPolicy],
        verifier: TokenVerifier | None,
    ) -> None:
        self.service, self.domain = service, domain
        self.policies = dict(policies)
        self.verifier = verifier
        # Without a tracer provider the OpenTelemetry server interceptor is not installed; an
        # incoming traceparent is still honoured, so logs and outgoing calls keep the trace id.
        self.propagate_only = not tracing_enabled()
        # Label children are looked up once per method and code, not once per call.
        self._handled = Children(RPC_HANDLED, service)  # by method and code
        self._durations = Children(RPC_DURATION, service)  # by method
        self.access_log = AccessLog(log)
        # Calls served at once (set by the server); past it more are refused with
        # RESOURCE_EXHAUSTED at once, shed instead of queued. gRPC's own limit would count only
        # the calls its main loop takes, not those the acceptors take (decision 24).
        self.max_in_flight: int | None = None
        self.in_flight = 0
        self.max_streams: int | None = None  # streams open at once (set by the server)
        self.stream_recheck_s = STREAM_RECHECK_S
        self.streams = 0
        self.stopping = asyncio.Event()  # set when the server begins to stop: streams end
        self._streams_open = Children(STREAMS_OPEN, service)  # by method
        self._stream_messages = Children(STREAM_MESSAGES, service)  # by method

    def wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        """The handler of `method` ("/package.Service/Method") with the platform around it."""
        policy = self.policies.get(method)
        if policy is None:
            return handler
        parse = handler.request_deserializer
        deserializer = _tolerant(parse) if parse is not None else None
        if handler.unary_unary is not None:
            behavior = cast(Behavior, handler.unary_unary)
            return grpc.unary_unary_rpc_method_handler(
                functools.partial(self._handle, behavior, method, policy),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            streams = cast(StreamBehavior, handler.unary_stream)
            return grpc.unary_stream_rpc_method_handler(
                functools.partial(self._handle_stream, streams, method, policy),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        # Serving it unwrapped would skip authentication: refuse to start instead.
        raise ValueError(f"{method}: the platform serves unary and server-streaming methods only")

    async def _handle(
        self,
        behavior: Behavior,
        method: str,
        policy: MethodPolicy,
        request: Message | Malformed,
        context: Context,
    ) -> Message:
        started = time.perf_counter()
        metadata, flow, remote = self._opening(method, context)
        code, principal, error_reason = grpc.StatusCode.OK, None, ""
        self.in_flight += 1
        try:
            if self.max_in_flight is not None and self.in_flight > self.max_in_flight:
                raise ResourceExhaustedError(
                    "TOO_MANY_CALLS", f"{self.service} is serving as many calls as it can; try again shortly"
                )
            with caller_deadline_scope(context.time_remaining()):  # for its calls to peers
                principal, flow = await self._caller(policy, metadata, flow)
                with principal_scope(principal), flow_scope(flow):
                    _check(policy, request)
                    return await behavior(request, context)
        except BaseException as exc:
            code, error_reason, status = self._ending(method, exc, context)
            if status is not None:
                await context.abort_with_status(status)  # raises
            raise
        finally:
            self.in_flight -= 1
            self._observe(method, code, time.perf_counter() - started, flow, principal, error_reason)
            if remote is not None:
                otel_context.detach(remote)

    async def _handle_stream(
        self,
        behavior: StreamBehavior,
        method: str,
        policy: MethodPolicy,
        request: Message | Malformed,
        context: Context,
    ) -> AsyncIterator[Message]:
        started = time.perf_counter()
        metadata, flow, remote = self._opening(method, context)
        code, principal, error_reason = grpc.StatusCode.OK, None, ""
        short, opened = method.rsplit("/", 1)[-1], False
        try:
            if self.max_streams is not None and self.streams >= self.max_streams:
                raise ResourceExhaustedError(
                    "TOO_MANY_STREAMS", f"{self.service} has as many streams open as it may; try again later"
                )
            principal, flow = await self._caller(policy, metadata, flow)
            with principal_scope(principal), flow_scope(flow):
                _check(policy, request)
                self.streams, opened = self.streams + 1, True
                self._streams_open(short).inc()
                sent = self._stream_messages(short)
                # Closed here, not whenever it is collected, when the client goes away mid-stream.
                kept = self._kept_open(behavior(request, context), principal)
                async with contextlib.aclosing(kept):
                    async for message in kept:
                        sent.inc()
                        yield message
        except BaseException as exc:
            code, error_reason, status = self._ending(method, exc, context)
            if status is not None:
                await context.abort_with_status(status)  # raises
            raise
        finally:
            if opened:
                self.streams -= 1
                self._streams_open(short).dec()
            seconds = time.perf_counter() - started
            self._observe(method, code, seconds, flow, principal, error_reason, stream=True)
            if remote is not None:
                otel_context.detach(remote)

    async def _kept_open(
        self, messages: AsyncIterator[Message], principal: Principal | None
    ) -> AsyncGenerator[Message, None]:
        """`messages` until they end, the server begins to stop (UnavailableError), or the
        caller's token expires or its session ends (UnauthenticatedError)."""
        stopping = asyncio.ensure_future(self.stopping.wait())
        try:
            while True:
                step = asyncio.ensure_future(anext(messages))
                try:
                    while not step.done():
                        wait_s = self.stream_recheck_s
                        if principal is not None and self.verifier is not None:
                            # A moment past the expiry, so that the check after the wait fails.
                            wait_s = min(wait_s, self.verifier.valid_until(principal) - time.time() + 0.01)
                        await asyncio.wait((step, stopping), timeout=max(wait_s, 0.0), return_when=FIRST)
                        if step.done():
                            break
                        if stopping.done():
                            raise UnavailableError(
                                "SERVICE_STOPPING", f"{self.service} is stopping; call again"
                            )
                        if principal is not None and self.verifier is not None:
                            await self.verifier.verify(principal.token)
                finally:
                    if not step.done():
                        step.cancel()
                        await asyncio.wait((step,))
                if step.cancelled():
                    raise asyncio.CancelledError
                try:
                    message = step.result()
                except StopAsyncIteration:
                    return
                yield message
        finally:
            stopping.cancel()
            aclose = getattr(messages, "aclose", None)
            if aclose is not None:
                await aclose()

    def _opening(
        self, method: str, context: Context
    ) -> tuple[dict[str, str], Flow, contextvars.Token[otel_context.Context] | None]:
        """A call's metadata, its flow, and the caller's trace context if attached here."""
        metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        # The call itself is the cause of whatever it publishes: "<Method>/<call id>"; a call that
        # starts a flow gives it its own id, as Flow.new does.
        call_id = new_id()
        correlation = caller_correlation(metadata.get("x-correlation-id")) or call_id
        flow = Flow(correlation, f"{method.rsplit('/', 1)[-1]}/{call_id}")
        remote = None
        if self.propagate_only and "traceparent" in metadata:
            remote = otel_context.attach(propagate.extract(metadata))
        return metadata, flow, remote

    async def _caller(
        self, policy: MethodPolicy, metadata: Mapping[str, str], flow: Flow
    ) -> tuple[Principal | None, Flow]:
        """The caller, authenticated when it sent a token or the method needs one, and the flow
        on its behalf."""
        token = bearer_token(metadata)
        if token is None and policy.public:
            return None, flow
        principal = await self._authenticate(policy, token)
        return principal, Flow(flow.correlation_id, flow.causation_id, principal.user_id if principal else "")

    def _ending(
        self, method: str, exc: BaseException, context: Context
    ) -> tuple[grpc.StatusCode, str, grpc.Status | None]:
        """How a call that raised `exc` ends: its code and reason, and the status to abort with
        (None when the call is already over: cancelled, aborted, or its stream closed). Called
        from within the `except`, so that an unexpected error is logged with its traceback."""
        if isinstance(exc, ANSWERED):
            err = exc if isinstance(exc, A4coError) else dependency_failure(method, exc)
            status = to_status(err, self.domain)
            if err.retry_delay_s is not None:
                status = with_pushback(status, err.retry_delay_s, context.time_remaining())
            return status.code, err.reason, status
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            return grpc.StatusCode.CANCELLED, "", None
        if isinstance(exc, grpc.aio.AbortError):
            return context.code() or grpc.StatusCode.UNKNOWN, "", None
        log.exception("unexpected error in %s", method)
        return grpc.StatusCode.INTERNAL, "", internal_status(self.domain)

    async def _authenticate(self, policy: MethodPolicy, token: str | None) -> Principal | None:
        if token is None or self.verifier is None:
            if policy.public:
                return None
            raise UnauthenticatedError("TOKEN_MISSING", "this call needs an access token")
        # A token that is present must be valid, on public methods too: a client with a stale
        # token learns it at once instead of being served as anonymous.
        principal = await self.verifier.verify(token)
        if policy.roles:
            principal.require(*policy.roles)
        return principal

    def _observe(
        self,
        method: str,
        code: grpc.StatusCode,
        seconds: float,
        flow: Flow,
        principal: Principal | None,
        error_reason: str,
        *,
        stream: bool = False,
    ) -> None:
        short, name = method.rsplit("/", 1)[-1], code.name
        self._handled(short, name).inc()
        if not stream:  # a stream's time is how long its client kept it, not a latency
            self._durations(short).observe(seconds)
        if not self.access_log.enabled:
            return
        self.access_log.add(
            (
                time.time(), method, short, name, seconds, flow.correlation_id,
                principal.user_id if principal else "", error_reason,
                trace.get_current_span().get_span_context(),  # the line is made later: its ids are taken now
            )
        )  # fmt: skip
