"""The saga benchmark splits each order's latency into stages from its events' stored times."""

from __future__ import annotations

import pytest

from a4co.inventory.events.v1 import inventory_events_pb2
from a4co.orders.events.v1 import order_events_pb2
from a4co.payments.events.v1 import payment_events_pb2
from bench.saga_bench import STAGES, milestone, stage_latencies, wall_clock_offset


def _timeline(start: float, gaps_ms: list[float]) -> dict[str, float]:
    """sent, answered, then each milestone and the receipt, `gaps_ms` apart (answered beside
    OrderCreated: it takes the first gap too)."""
    names = ["sent", "OrderCreated", "PaymentProcessed", "PAID", "StockReserved", "CONFIRMED", "received"]
    at, t = {}, start
    for name, gap in zip(names, [0.0, *gaps_ms], strict=True):
        t += gap / 1000
        at[name] = t
    at["answered"] = start + gaps_ms[0] / 2000
    return at


def test_each_stage_runs_from_the_milestone_before_it() -> None:
    timelines = {
        "a": _timeline(100.0, [10, 20, 30, 40, 50, 1]),
        "b": _timeline(200.0, [12, 22, 32, 42, 52, 3]),
        "incomplete": {k: v for k, v in _timeline(300.0, [1, 1, 1, 1, 1, 1]).items() if k != "StockReserved"},
    }
    stages, complete = stage_latencies(timelines)
    assert complete == 2
    assert [s.name for s in stages] == [name for name, _, _ in STAGES]
    by_name = {s.name: s for s in stages}
    assert by_name["CreateOrder answered"].p50_ms == pytest.approx(5.0)
    assert by_name["OrderCreated stored"].p50_ms == pytest.approx(10.0)
    assert by_name["OrderCreated stored"].p99_ms == pytest.approx(12.0)
    assert by_name["inventory: StockReserved"].p50_ms == pytest.approx(40.0)
    assert by_name["CONFIRMED received"].p99_ms == pytest.approx(3.0)
    # The stages after CreateOrder add up to the order's whole latency.
    whole = timelines["a"]["received"] - timelines["a"]["sent"]
    assert sum(s.p50_ms for s in stages[1:]) == pytest.approx(whole * 1000)


def test_a_confirmation_received_before_jetstream_stamped_it_ends_at_its_receipt() -> None:
    """NATS can hand a message to a core subscriber before its stream stamps it (measured:
    received up to 0.09 ms before the stamp)."""
    early = _timeline(100.0, [10, 20, 30, 40, 50, 0])
    early["received"] -= 0.001  # 1 ms before the stamp
    stages, complete = stage_latencies({"a": early})
    by_name = {s.name: s for s in stages}
    assert complete == 1
    assert by_name["CONFIRMED received"].p50_ms == pytest.approx(0.0)
    assert by_name["orders: CONFIRMED"].p50_ms == pytest.approx(49.0)
    assert all(s.p50_ms >= 0 for s in stages)


def test_no_complete_order_gives_no_stages() -> None:
    assert stage_latencies({"x": {"sent": 1.0, "answered": 1.1}}) == ([], 0)


def test_the_saga_events_mark_their_milestones() -> None:
    def changed(status: int) -> order_events_pb2.OrderStatusChanged:
        return order_events_pb2.OrderStatusChanged(order_id="o", status=status)  # type: ignore[arg-type]

    assert milestone(changed(order_events_pb2.ORDER_STATUS_PAID)) == ("PAID", "o")
    assert milestone(changed(order_events_pb2.ORDER_STATUS_CONFIRMED)) == ("CONFIRMED", "o")
    assert milestone(changed(order_events_pb2.ORDER_STATUS_CANCELLED)) is None
    assert milestone(order_events_pb2.OrderCreated(order_id="o")) == ("OrderCreated", "o")
    assert milestone(payment_events_pb2.PaymentProcessed(order_id="p")) == ("PaymentProcessed", "p")
    assert milestone(payment_events_pb2.PaymentFailed(order_id="o")) is None
    assert milestone(inventory_events_pb2.StockReserved(order_id="s")) == ("StockReserved", "s")


def test_the_clocks_are_matched_on_the_tightest_sample() -> None:
    """A sample whose two monotonic readings straddle a pause (another thread holding the
    interpreter) is not the one used."""
    monotonic = iter([10.0, 10.004, 20.0, 20.000002]).__next__  # 4 ms between, then 2 µs
    wall = iter([1_000.003, 2_000.000001]).__next__
    assert wall_clock_offset(monotonic, wall, samples=2) == pytest.approx(2_000.000001 - 20.000001)
