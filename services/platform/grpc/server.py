"""A service's gRPC server: health (NOT_SERVING while a dependency is down), reflection, the
platform interceptor and OpenTelemetry tracing, and a graceful stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import Gauge

from services.platform.grpc.acceptors import Acceptors
from services.platform.grpc.interceptor import PlatformInterceptor
from services.platform.grpc.reflection import add_reflection
from services.platform.resilience import cancel_and_wait
from services.platform.telemetry import server_interceptors

log = logging.getLogger(__name__)

DEPENDENCY_UP = Gauge(
    "a4co_dependency_up",
    "Whether a service's dependency (postgres, nats, redis) passed its last health check.",
    ["service", "dependency"],
)

Check = Callable[[], Awaitable[bool]]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


# A service's exit status when its gRPC or metrics address cannot be bound (os.EX_TEMPFAIL: try
# again): the launcher then starts it again on other ports.
EXIT_CANNOT_LISTEN = 75
MONITOR_STOP_S = 5.0
# How long a dependency's health check may take before the dependency counts as down.
CHECK_TIMEOUT_S = 1.0
# The largest request a service accepts. The largest the fields' bounds allow are an order of 50
# lines with the longest ids and address, 6,258 bytes, and a product with the longest name and
# description in two-byte characters, 4,314; gRPC refuses a larger one with RESOURCE_EXHAUSTED
# before it is parsed. It also bounds what one request can make a service
# store and publish, far below the size of an event that NATS would refuse (codec.MAX_EVENT_BYTES).
MAX_REQUEST_BYTES = 64 * 1024
# The server pings each client connection every `keepalive_s` (Settings.grpc_keepalive_s), with or
# without calls on it, and closes one whose answer does not come within this time: a client gone
# without closing its connection (a laptop asleep, a network cut) does not hold a stream open.
KEEPALIVE_TIMEOUT_S = 20.0


class ListenError(RuntimeError):
    """The gRPC or metrics address could not be bound: another socket holds it, or it is not
    this host's."""


@dataclass(frozen=True, slots=True)
class Registration:
    """One gRPC service to serve: its full name and how to add its servicer to a server."""

    name: str
    add: Callable[[grpc.aio.Server], None]


class _Collector:
    """Stands in for the server while generated code registers a servicer, keeping its method
    handlers so that the platform can wrap each one before the real server gets it."""

    def __init__(self) -> None:
        self.handlers: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}
        self.generic = 0

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        """Counted only: generated code registers the same methods by name just after."""
        self.generic += len(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        """Keep the handlers of `service`."""
        self.handlers[service] = dict(handlers)


async def _checked(check: Check) -> bool:
    return await check()


class HealthMonitor:
    """Runs the dependency checks and sets the health of every served service from them: NOT_SERVING
    while an `essential` one fails (every one unless named); the others' failures are exported
    (`a4co_dependency_up`) and logged, and the service serves on without them."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        names: Sequence[str],
        checks: Mapping[str, Check],
        essential: Collection[str] | None = None,
        service: str = "",
    ) -> None:
        self.servicer, self.names, self.checks = servicer, list(names), dict(checks)
        self.essential = set(self.checks if essential is None else essential)
        self.failing: list[str] = []
        self._up = {name: DEPENDENCY_UP.labels(service, name) for name in self.checks}
        self._task: asyncio.Task[None] | None = None
        # Each dependency's last check, while it runs on past the time it was given.
        self._checking: dict[str, asyncio.Task[bool]] = {}

    async def check_once(self) -> bool:
        """Run every check (each given CHECK_TIMEOUT_S) and publish the result; True when all pass."""
        failing = []
        for name in self.checks:
            ok = await self._probe(name)
            self._up[name].set(int(ok))
            if not ok:
                failing.append(name)
        serving = not self.essential.intersection(failing)
        if failing != self.failing:
            said = f"down: {', '.join(failing)}" if failing else "all dependencies up"
            log.warning("health: %s%s", said, "" if serving or not failing else "; NOT_SERVING")
        self.failing = failing
        status = SERVING if serving else NOT_SERVING
        for name in ["", *self.names]:
            await self.servicer.set(name, status)
        return not failing

    async def _probe(self, name: str) -> bool:
        """One check of dependency `name`: down when it raises or has not answered within
        CHECK_TIMEOUT_S. The check runs as a task of its own, and one given up on is cancelled but
        not waited for: a client may wait out a stalled server even then (asyncpg gives a pooled
        connection back to PostgreSQL, shielded from cancellation), and the monitor would stall
        with it, its last SERVING standing for as long. While it runs on, its dependency is down,
        and no other check of it starts."""
        task = self._checking.get(name)
        if task is None or task.done():
            if task is not None and not task.cancelled():
                task.exception()  # one given up on that ended since: its outcome is old news
            task = asyncio.create_task(_checked(self.checks[name]), name=f"health check of {name}")
            self._checking[name] = task
        done, _ = await asyncio.wait({task}, timeout=CHECK_TIMEOUT_S)
        if not done:
            task.cancel()
            return False
        if task.cancelled() or task.exception() is not None:  # a check that raises counts as down
            return False
        return bool(task.result())

    def start(self, interval_s: float) -> None:
        """Check every `interval_s` seconds in the background."""

        async def loop() -> None:
            while True:
                await self.check_once()
                await asyncio.sleep(interval_s)  # the polling period of the health checks

        self._task = asyncio.create_task(loop(), name="health monitor")

    async def stop(self) -> None:
        """Stop checking (a check's client may swallow the cancellation: `cancel_and_wait`)."""
        if self._task is not None:
            await cancel_and_wait(self._task, MONITOR_STOP_S)
        for task in self._checking.values():
            task.cancel()  # a stalled one is not waited for, as while checking


class GrpcServer:
    """A grpc.aio server with the platform's interceptors, health and reflection."""

    def __init__(
        self,
        registrations: Sequence[Registration],
        interceptor: PlatformInterceptor,
        *,
        checks: Mapping[str, Check] | None = None,
        essential: Collection[str] | None = None,
        service_label: str = "",
        address: str = "127.0.0.1:0",
        health_interval_s: float = 1.0,
        max_concurrent_rpcs: int | None = None,
        max_streams: int | None = None,
        acceptors: int = 4,
        keepalive_s: float | None = None,
        max_connection_age_s: float | None = None,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        # The OpenTelemetry interceptor only when spans are recorded: it costs every call.
        interceptors = server_interceptors() or []
        options: list[tuple[str, int]] = [
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
        ]
        if keepalive_s is not None:
            answer_ms = int(min(keepalive_s, KEEPALIVE_TIMEOUT_S) * 1000)
            options += [
                ("grpc.keepalive_time_ms", int(keepalive_s * 1000)),
                ("grpc.keepalive_timeout_ms", answer_ms),
                # grpcio 1.85 times a keepalive ping out by this one (1 minute by default).
                ("grpc.http2.ping_timeout_ms", answer_ms),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0),  # an idle stream sends no data
            ]
        if max_connection_age_s is not None:
            # A GOAWAY after this long: new calls go on a new connection, which a client spreading
            # its calls (round_robin) makes to the replicas its name resolves to then. No grace
            # limit: a stream open on the old connection runs on to its end.
            options.append(("grpc.max_connection_age_ms", int(max_connection_age_s * 1000)))
        self.server = grpc.aio.server(interceptors=interceptors, options=options)
        # Past this many calls at once, more are refused with RESOURCE_EXHAUSTED: under overload
        # a service sheds load at once instead of queueing calls without bound (memory grows,
        # and every queued caller waits past its deadline anyway). The interceptor counts them:
        # gRPC's own limit would miss the calls the acceptors take.
        interceptor.max_in_flight = max_concurrent_rpcs
        interceptor.max_streams = max_streams
        served: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        for registration in registrations:
            collected = _Collector()
            registration.add(cast(grpc.aio.Server, collected))
            if collected.generic and not collected.handlers:
                # Serving them unwrapped would skip authentication: refuse to start instead.
                raise ValueError(
                    f"{registration.name} registers only generic handlers; regenerate it with"
                    " grpcio-tools 1.62 or later, which also registers methods by name"
                )
            for service, handlers in collected.handlers.items():
                wrapped = {name: interceptor.wrap(f"/{service}/{name}", h) for name, h in handlers.items()}
                generic = grpc.method_handlers_generic_handler(service, wrapped)
                self.server.add_generic_rpc_handlers((generic,))
                self.server.add_registered_method_handlers(service, wrapped)
                served.update({f"/{service}/{name}": h for name, h in wrapped.items()})
        # Each of the services' methods takes up to `acceptors` queued calls at once instead of
        # gRPC's one (decision 24); health and reflection keep gRPC's one.
        self.acceptors = Acceptors(self.server, served, interceptors, extra=acceptors - 1)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [r.name for r in registrations]
        add_reflection(self.server, [*names, health.SERVICE_NAME])
        self.monitor = HealthMonitor(self.health, names, checks or {}, essential, service_label)
        self.interceptor = interceptor
        try:
            if credentials is None:
                self.port = self.server.add_insecure_port(address)
            else:  # TLS (decision 58)
                self.port = self.server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise ListenError(f"cannot listen on {address}: {exc}") from exc
        self._address = address
        self._health_interval_s = health_interval_s

    @property
    def address(self) -> str:
        """host:port the server listens on."""
        return f"{self._address.rsplit(':', 1)[0]}:{self.port}"

    async def start(self) -> None:
        """Start serving; health follows the dependency checks from now on."""
        await self.server.start()
        self.acceptors.start()
        await self.monitor.check_once()
        self.monitor.start(self._health_interval_s)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Graceful stop: report NOT_SERVING, refuse new calls, let in-flight calls finish."""
        await self.monitor.stop()
        await self.health.enter_graceful_shutdown()
        self.interceptor.stopping.set()  # open streams end now, instead of holding the stop
        await self.server.stop(grace_s)
        await self.acceptors.stop()
        self.interceptor.access_log.flush()  # the lines of the last calls
