"""A service's methods take several queued calls at a time (decision 24), and stop cleanly."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import grpc
import pytest

from a4co.inventory.v1 import inventory_service_pb2 as pb
from a4co.inventory.v1 import inventory_service_pb2_grpc as pb_grpc
from services.platform.grpc import acceptors
from tests.support.rpc import inventory_server
from tests.support.waiting import eventually

CALLS = 12


class Busy:
    """Keeps the event loop busy: each turn of the loop it holds the loop for a moment, and
    counts the turns."""

    def __init__(self) -> None:
        self.turns = 0
        self._on = True

    def start(self) -> None:
        asyncio.get_running_loop().call_soon(self._turn)

    def stop(self) -> None:
        self._on = False

    def _turn(self) -> None:
        if self._on:
            self.turns += 1
            time.sleep(0.002)  # the loop's other work on a busy process (it lets gRPC's threads run)
            asyncio.get_running_loop().call_soon(self._turn)


class Counted(pb_grpc.InventoryServiceServicer):
    """CheckStock notes the turn of the loop at which its handler started."""

    def __init__(self, busy: Busy) -> None:
        self.busy = busy
        self.started: list[int] = []

    async def CheckStock(self, request: pb.CheckStockRequest, context: Any) -> pb.CheckStockResponse:  # noqa: N802
        self.started.append(self.busy.turns)
        return pb.CheckStockResponse(all_available=True)

    async def GetStock(self, request: pb.GetStockRequest, context: Any) -> pb.GetStockResponse:  # noqa: N802
        return pb.GetStockResponse()

    async def AdjustStock(self, request: pb.AdjustStockRequest, context: Any) -> pb.AdjustStockResponse:  # noqa: N802
        return pb.AdjustStockResponse()


def send_at_once(address: str, calls: int) -> list[pb.CheckStockResponse]:
    """`calls` CheckStock calls sent together from another thread (gRPC's blocking client), so
    that they reach the server's queue while its loop is busy."""
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = pb_grpc.InventoryServiceStub(channel)
        futures = [stub.CheckStock.future(pb.CheckStockRequest(), timeout=30) for _ in range(calls)]
        return [f.result() for f in futures]


async def turns_to_take(acceptors_per_method: int) -> int:
    """Turns of a busy loop between the first and the last of `CALLS` queued calls starting."""
    busy = Busy()
    servicer = Counted(busy)
    server = inventory_server(servicer, acceptors=acceptors_per_method)
    await server.start()
    try:
        warm = await asyncio.to_thread(send_at_once, server.address, 1)  # connection made
        assert warm[0].all_available
        servicer.started.clear()
        busy.start()
        answers: list[Any] = []
        sender = threading.Thread(target=lambda: answers.extend(send_at_once(server.address, CALLS)))
        sender.start()
        await eventually(lambda: len(servicer.started) == CALLS, what="every call started")
        busy.stop()
        await asyncio.to_thread(sender.join, 30)
        assert len(answers) == CALLS
        assert all(a.all_available for a in answers)
        return max(servicer.started) - min(servicer.started)
    finally:
        await server.stop(grace_s=1)


async def test_this_grpcio_has_what_the_acceptors_use() -> None:
    server = grpc.aio.server()
    try:
        assert acceptors.supported(server), "grpcio changed: see services/platform/grpc/acceptors.py"
    finally:
        await server.stop(None)


async def test_queued_calls_of_a_method_are_taken_several_at_a_time() -> None:
    one = await turns_to_take(1)  # gRPC's own request only
    four = await turns_to_take(4)
    print(f"turns of a busy loop to take {CALLS} queued calls: one at a time {one}, four at a time {four}")
    assert four * 2 < one


async def test_the_acceptors_end_with_the_server_and_no_call_is_lost() -> None:
    busy = Busy()
    servicer = Counted(busy)
    server = inventory_server(servicer, acceptors=4)
    await server.start()
    assert server.acceptors.running == 3 * 3  # three methods, three beside gRPC's own for each
    answers = await asyncio.to_thread(send_at_once, server.address, CALLS)
    assert len(answers) == CALLS
    assert len(servicer.started) == CALLS
    await server.stop(grace_s=1)
    assert server.acceptors.running == 0
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("accept ")]


async def test_without_the_entry_points_the_server_takes_calls_as_grpc_does(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class OlderGrpc:
        """A grpcio whose Cython layer lacks one of the entry points the acceptors use."""

        def __getattr__(self, name: str) -> Any:
            if name == "_schedule_rpc_coro":
                raise AttributeError(name)
            return getattr(real, name)

    real = acceptors.cygrpc
    monkeypatch.setattr(acceptors, "cygrpc", OlderGrpc())
    busy = Busy()
    servicer = Counted(busy)
    server = inventory_server(servicer, acceptors=4)
    with caplog.at_level(logging.WARNING, logger=acceptors.__name__):
        await server.start()
    try:
        assert server.acceptors.running == 0
        assert "cannot accept calls of a method concurrently; one at a time" in caplog.text
        answers = await asyncio.to_thread(send_at_once, server.address, CALLS)
        assert len(answers) == CALLS
        assert all(a.all_available for a in answers)
    finally:
        await server.stop(grace_s=1)
