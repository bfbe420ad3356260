"""More than one call of each method accepted at a time by a grpc.aio server (decision 24).

grpc.aio's server asks gRPC's core for the next call of a method only once the previous call has
reached the event loop: one request per method at a time, and each takes several turns of the
loop and a wake-up of gRPC's poller thread. On a busy process the calls that arrive meanwhile
wait in the core's queue and are taken one per cycle (3 to 20 ms apart under the saga's load, so
payments' GetPaymentMethod calls waited up to 325 ms there before their handler ran, in 0.1 ms).

`Acceptors` keeps more requests posted for the same methods, through the server's own entry
points, and hands each call it receives to gRPC's own handling, exactly as the server's main
loop does. Those entry points are private to grpcio, whose version the lock file pins; where
they are missing, `supported` says so and the server keeps gRPC's single request per method.
A call the acceptors take skips gRPC's `maximum_concurrent_rpcs`, which counts only its own:
the platform's interceptor applies the limit to every call instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

log = logging.getLogger(__name__)

# grpcio's Cython layer has no type stubs: what is used of it is named below and checked by
# `supported`.
cygrpc: Any = importlib.import_module("grpc._cython.cygrpc")

# What the acceptors use of grpcio's Cython layer (grpc/_cython/_cygrpc/aio/server.pyx.pxi).
_CYGRPC_NAMES = ("_MethodResolver", "_handle_rpc", "_schedule_rpc_coro", "_RequestCallError")
_SERVER_NAMES = ("_request_registered_call", "is_running")


def _core(server: grpc.aio.Server) -> Any:
    """The Cython server behind a grpc.aio server."""
    return getattr(server, "_server", None)


def supported(server: grpc.aio.Server) -> bool:
    """Whether this grpcio has the entry points the acceptors use."""
    core = _core(server)
    return all(hasattr(cygrpc, name) for name in _CYGRPC_NAMES) and all(
        hasattr(core, name) for name in _SERVER_NAMES
    )


class Acceptors:
    """`extra` more requests for each of `handlers`' methods, kept posted while the server runs."""

    def __init__(
        self,
        server: grpc.aio.Server,
        handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]],
        interceptors: Sequence[grpc.aio.ServerInterceptor],
        extra: int,
    ) -> None:
        self.server = server
        self.extra = extra
        self._handlers = dict(handlers)
        self._interceptors = tuple(interceptors)
        self._acceptors: list[asyncio.Task[None]] = []
        self._calls: set[asyncio.Task[Any]] = set()

    @property
    def running(self) -> int:
        """How many acceptors are waiting for calls."""
        return sum(1 for task in self._acceptors if not task.done())

    def start(self) -> None:
        """Post the requests; call once the server has started."""
        if self.extra <= 0 or not self._handlers:
            return
        if not supported(self.server):
            log.warning("this grpcio cannot accept calls of a method concurrently; one at a time")
            return
        core = _core(self.server)
        resolver = cygrpc._MethodResolver([], dict(self._handlers))
        for method in self._handlers:
            for n in range(self.extra):
                task = asyncio.create_task(self._accept(core, resolver, method), name=f"accept {method} {n}")
                self._acceptors.append(task)

    async def _accept(self, core: Any, resolver: Any, method: str) -> None:
        loop = asyncio.get_running_loop()
        name = method.encode()
        try:
            while core.is_running():
                try:
                    state = await core._request_registered_call(name)
                except cygrpc._RequestCallError:
                    continue  # the core gave this request up (as at shutdown): ask again while running
                # As the server's main loop does with a call it takes (concurrency_exceeded=False:
                # the interceptor applies the limit).
                handling = cygrpc._handle_rpc(method, resolver, self._interceptors, state, loop, False)
                scheduled = cygrpc._schedule_rpc_coro(handling, state, loop, method)
                call = loop.create_task(scheduled, name="rpc_task")
                self._calls.add(call)  # the loop keeps only a weak reference
                call.add_done_callback(self._calls.discard)
        except Exception:  # gRPC's own request for the method still serves it
            log.exception("an acceptor of %s stopped", method)

    async def stop(self) -> None:
        """Wait for the acceptors to end; call once the server has stopped.

        The server's shutdown fails every posted request, which ends each acceptor. Cancelling
        one while its request is posted would lose the call that request later receives, so
        they are cancelled only if they have not ended within a second of the stop.
        """
        if not self._acceptors:
            return
        _, pending = await asyncio.wait(self._acceptors, timeout=1.0)
        for task in pending:
            task.cancel()
        for task in self._acceptors:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._acceptors.clear()
