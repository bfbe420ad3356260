"""Calling another service: a deadline on every call, the strategy's circuit breaker, and retries
of idempotent calls within that deadline."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from opentelemetry import propagate
from prometheus_client import Counter, Histogram

from services.platform.auth import optional_principal
from services.platform.errors import UnavailableError
from services.platform.flow import current_flow
from services.platform.grpc.deadline import caller_deadline
from services.platform.grpc.interceptor import RPC_BUCKETS
from services.platform.grpc.tls import PLAINTEXT, Certificates, Tls, channel
from services.platform.labels import Children
from services.platform.resilience import Backoff, BreakerOpenError, CircuitBreaker, exported
from services.platform.telemetry import client_interceptors, tracing_enabled

CLIENT_CALLS = Counter(
    "a4co_grpc_client_calls_total",
    "Outgoing RPCs by peer, method and result code (CIRCUIT_OPEN when refused by the breaker).",
    ["peer", "method", "code"],
)

CLIENT_DURATION = Histogram(
    "a4co_grpc_client_handling_seconds",
    "Time from sending an outgoing RPC to its answer, each attempt, by peer and method: the peer's"
    " handling plus the network and the waits for a core at both ends.",
    ["peer", "method"],
    buckets=RPC_BUCKETS,
)

# Codes that say the peer, not the request, is at fault: they count against the breaker and
# may be retried.
PEER_FAILURES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})

Resp = TypeVar("Resp", bound=Message)
Stub = TypeVar("Stub")

log = logging.getLogger(__name__)
# A channel left for new TLS files is closed this long after: every call begun on it has ended by
# then (their deadlines are seconds).
RETIRE_AFTER_S = 60.0
# A peer that has not answered an attempt within this long has failed it, whichever deadline ended
# the call: two and a half times the slowest sync SLA (200 ms p99, geo's and payments'). A call
# its caller's sooner deadline cut short before then says nothing of the peer; past it, a hung
# peer opens its circuit however hasty the callers (their deadlines under the client's own, 2 s
# for orders' peers, would else never count it, decision 75).
HUNG_AFTER_S = 0.5


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The strategy's retries: 3 attempts, exponential from 1 s with jitter, 30 s cap."""

    attempts: int = 3
    backoff: Backoff = field(default_factory=Backoff)


def open_channel(target: str, tls: Tls = PLAINTEXT) -> grpc.aio.Channel:
    """A channel to `target`, over TLS when `tls` has a CA (decision 58), with client spans when a
    tracer provider is installed. Its calls take turns over every address `target` resolves to
    (`round_robin`), as the service config tells other clients: replicas of a peer behind one
    name share its calls, where gRPC's default would send all of them to the first."""
    return channel(
        target,
        tls,
        interceptors=client_interceptors(),
        options=[
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.enable_retries", 0),
            ("grpc.lb_policy_name", "round_robin"),
        ],
    )


class PeerClient:
    """Calls to one peer service, guarded by its breaker and bounded by deadlines."""

    def __init__(
        self,
        peer: str,
        channel: grpc.aio.Channel,
        *,
        timeout_s: float = 1.0,
        hung_after_s: float = HUNG_AFTER_S,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.peer, self.channel, self.timeout_s = peer, channel, timeout_s
        self.hung_after_s = hung_after_s
        # Set by `to`: the target and TLS files the channel is opened again with when they change.
        self._target = ""
        self._certificates: Certificates | None = None
        self._generation = 0
        self._stubs: dict[Callable[[grpc.aio.Channel], Any], Any] = {}
        self._retiring: dict[asyncio.Task[None], grpc.aio.Channel] = {}
        self.retire_after_s = RETIRE_AFTER_S
        self.retry = retry or RetryPolicy()
        self.breaker = exported(CircuitBreaker(peer, clock=clock))
        self._sleep = sleep
        self._counted = Children(CLIENT_CALLS, peer)  # by method and code
        self._duration = Children(CLIENT_DURATION, peer)  # by method
        # As the channel's interceptors, fixed when the client is made (open_channel).
        self._tracing = tracing_enabled()

    @classmethod
    def to(cls, peer: str, target: str, certificates: Certificates, **kwargs: Any) -> PeerClient:
        """A client of `target` whose calls follow the process's TLS files (decision 59): when
        they change, `stub` opens a new channel with them and the old one is closed once the
        calls begun on it have ended."""
        client = cls(peer, open_channel(target, certificates.tls), **kwargs)
        client._target, client._certificates = target, certificates
        client._generation = certificates.generation
        return client

    def stub(self, factory: Callable[[grpc.aio.Channel], Stub]) -> Stub:
        """The stub `factory` makes of the current channel (one kept per channel)."""
        if self._certificates is not None and self._certificates.generation != self._generation:
            self._reopen(self._certificates)
        stub = self._stubs.get(factory)
        if stub is None:
            stub = self._stubs[factory] = factory(self.channel)
        return stub

    def _reopen(self, certificates: Certificates) -> None:
        old, self._generation = self.channel, certificates.generation
        self.channel = open_channel(self._target, certificates.tls)
        self._stubs.clear()
        task = asyncio.get_running_loop().create_task(
            self._retire(old), name=f"retire channel to {self.peer}"
        )
        self._retiring[task] = old
        task.add_done_callback(lambda done: self._retiring.pop(done, None))
        log.info("calls to %s go over a new channel, with the TLS files read again", self.peer)

    async def _retire(self, old: grpc.aio.Channel) -> None:
        await asyncio.sleep(self.retire_after_s)
        await old.close()

    async def call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[Any, Resp],
        request: Message,
        *,
        timeout_s: float | None = None,
        idempotent: bool = False,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> Resp:
        """Call `method`; retried only when `idempotent`, never past the deadline: `timeout_s` (the
        client's own by default), or sooner the deadline of the call being served, if any.

        Raises the peer's AioRpcError for answers, and UnavailableError when the breaker refuses
        the call or the peer stays unreachable.
        """
        name = _method_name(method)
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        # The caller of the call being served may stop waiting sooner: the peer is given no longer.
        # A peer that runs out of that time has not failed, its answer too late for the caller,
        # unless it had `hung_after_s` (HUNG_AFTER_S) and gave none (`_left`).
        callers, cut_short = caller_deadline(), False
        if callers is not None and callers < deadline:
            deadline, cut_short = callers, True
        md = (*self._propagated(), *metadata)
        attempt = 0
        while True:
            attempt += 1
            try:
                self.breaker.before_call()
            except BreakerOpenError as exc:
                self._counted(name, "CIRCUIT_OPEN").inc()
                raise UnavailableError(
                    "CIRCUIT_OPEN",
                    str(exc),
                    metadata={"peer": self.peer},
                    retry_delay_s=max(1, math.ceil(exc.retry_in_s)),  # a trial under way: 1 s
                ) from exc
            remaining = deadline - time.monotonic()
            started = time.perf_counter()
            try:
                response = await method(request, timeout=max(remaining, 0.001), metadata=md)
            except grpc.aio.AioRpcError as err:
                waited = time.perf_counter() - started
                self._duration(name).observe(waited)
                code = err.code()
                self._counted(name, code.name).inc()
                if cut_short and code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    self._left(waited)
                elif code in PEER_FAILURES:
                    self.breaker.record_failure(f"{code.name}: {err.details()}")
                else:
                    self.breaker.record_success()
                if not await self._may_retry(code, attempt, idempotent, deadline):
                    raise
                continue
            except BaseException:  # cancelled: the served call's deadline passed, or its caller left
                self._left(time.perf_counter() - started)
                raise
            self._duration(name).observe(time.perf_counter() - started)
            self._counted(name, "OK").inc()
            self.breaker.record_success()
            return response

    def _left(self, waited: float) -> None:
        """An attempt its caller stopped waiting for after `waited` seconds, by cancelling it or by
        the served call's deadline: the peer's failure if it had `hung_after_s` without answering,
        else nothing learnt of it (a half-open circuit's next call is the trial)."""
        if waited >= self.hung_after_s:
            self.breaker.record_failure(f"no answer within {waited:.1f} s, when its caller stopped waiting")
        else:
            self.breaker.record_abandoned()

    async def _may_retry(
        self, code: grpc.StatusCode, attempt: int, idempotent: bool, deadline: float
    ) -> bool:
        if not idempotent or code not in RETRYABLE or attempt >= self.retry.attempts:
            return False
        delay = self.retry.backoff.delay(attempt)
        if time.monotonic() + delay >= deadline:
            return False
        await self._sleep(delay)
        return True

    def _propagated(self) -> list[tuple[str, str]]:
        """The caller's correlation id and, when acting for a user, their token."""
        md = [("x-correlation-id", current_flow().correlation_id)]
        if not self._tracing:
            # No client interceptor injects the trace context: pass on the one the call came with.
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            md.extend(carrier.items())
        principal = optional_principal()
        if principal is not None and principal.token:
            md.append(("authorization", f"Bearer {principal.token}"))
        return md

    async def close(self) -> None:
        """Close the channel, and any left for new TLS files."""
        await self.channel.close()
        for task, old in list(self._retiring.items()):
            task.cancel()
            await old.close()


def _method_name(method: object) -> str:
    raw = getattr(method, "_method", b"")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return text.rsplit("/", 1)[-1] or "unknown"
