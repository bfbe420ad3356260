"""Without a tracer provider (no OTLP endpoint) no span is built, yet the trace context a call
comes with still reaches the logs, the calls it makes to peers and the events it publishes."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from opentelemetry import trace

from a4co.inventory.v1 import inventory_service_pb2 as pb
from a4co.inventory.v1 import inventory_service_pb2_grpc as pb_grpc
from services.platform.events import codec as codec_module
from services.platform.events.codec import EventCodec
from services.platform.events.registry import load_registry
from services.platform.events.topology import Topology
from services.platform.grpc import client as client_module
from services.platform.grpc import interceptor as interceptor_module
from services.platform.grpc.client import PeerClient
from tests.integration.events.rig import order_created
from tests.support.rpc import inventory_server

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class Seen(pb_grpc.InventoryServiceServicer):
    """Records what a handler sees of the trace context."""

    def __init__(self) -> None:
        self.trace_id = ""
        self.peer_metadata: dict[str, str] = {}
        self.event_headers: dict[str, str] = {}
        self.codec = EventCodec(load_registry(), "inventory", Topology("t"))
        # A client made as orders makes its own: it asks once, when made, whether spans are built.
        self.peer = PeerClient("geo", client_module.open_channel("127.0.0.1:9"))

    async def CheckStock(self, request: pb.CheckStockRequest, context: Any) -> pb.CheckStockResponse:  # noqa: N802
        self.trace_id = format(trace.get_current_span().get_span_context().trace_id, "032x")
        self.peer_metadata = dict(self.peer._propagated())
        self.event_headers = self.codec.encode(order_created("o-1"), aggregate_id="o-1").headers
        return pb.CheckStockResponse(all_available=True)

    async def GetStock(self, request: pb.GetStockRequest, context: Any) -> pb.GetStockResponse:  # noqa: N802
        return pb.GetStockResponse()

    async def AdjustStock(self, request: pb.AdjustStockRequest, context: Any) -> pb.AdjustStockResponse:  # noqa: N802
        return pb.AdjustStockResponse()


async def test_an_incoming_traceparent_is_passed_on_without_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    # The test session installs a tracer provider; the platform is told there is none, so the
    # OpenTelemetry interceptors are not installed and no span is made.
    # (The server follows the platform layer's decision.)
    for module in (client_module, codec_module, interceptor_module):
        monkeypatch.setattr(module, "tracing_enabled", lambda: False)
    servicer = Seen()
    server = inventory_server(servicer)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.InventoryServiceStub(channel)
            metadata = (("traceparent", TRACEPARENT),)
            await stub.CheckStock(pb.CheckStockRequest(), metadata=metadata, timeout=10)
    finally:
        await server.stop(grace_s=1)
        await servicer.peer.close()

    assert servicer.trace_id == TRACE_ID
    assert TRACE_ID in servicer.peer_metadata["traceparent"]
    assert TRACE_ID in servicer.event_headers["traceparent"]
