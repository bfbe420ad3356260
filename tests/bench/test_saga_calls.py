"""The saga benchmark times each synchronous call from the services' histograms, as Prometheus
would: the buckets' growth during a step, interpolated within a bucket."""

from __future__ import annotations

import math

import pytest

from bench.saga_bench import bucket_quantile, histogram_buckets

INF = math.inf

PAGE = """# HELP a4co_grpc_client_handling_seconds Time from sending an outgoing RPC to its answer.
# TYPE a4co_grpc_client_handling_seconds histogram
a4co_grpc_client_handling_seconds_bucket{le="0.001",method="CheckStock",peer="inventory"} 3.0
a4co_grpc_client_handling_seconds_bucket{le="0.005",method="CheckStock",peer="inventory"} 7.0
a4co_grpc_client_handling_seconds_bucket{le="+Inf",method="CheckStock",peer="inventory"} 8.0
a4co_grpc_client_handling_seconds_count{method="CheckStock",peer="inventory"} 8.0
a4co_grpc_client_handling_seconds_sum{method="CheckStock",peer="inventory"} 0.03
a4co_grpc_client_handling_seconds_bucket{le="0.001",method="QuoteDelivery",peer="geo"} 1.0
a4co_grpc_client_handling_seconds_bucket{le="0.005",method="QuoteDelivery",peer="geo"} 1.0
a4co_grpc_client_handling_seconds_bucket{le="+Inf",method="QuoteDelivery",peer="geo"} 1.0
a4co_grpc_client_handling_seconds_count{method="QuoteDelivery",peer="geo"} 1.0
a4co_grpc_client_handling_seconds_sum{method="QuoteDelivery",peer="geo"} 0.0005
"""


def test_one_series_of_a_histogram_is_read_from_a_page() -> None:
    labels = {"peer": "inventory", "method": "CheckStock"}
    assert histogram_buckets(PAGE, "a4co_grpc_client_handling_seconds", labels) == [
        (0.001, 3.0),
        (0.005, 7.0),
        (INF, 8.0),
    ]
    assert histogram_buckets(PAGE, "a4co_grpc_client_handling_seconds", {"peer": "payments"}) == []


def test_quantiles_of_what_was_observed_between_two_readings() -> None:
    before = [(0.001, 5.0), (0.005, 5.0), (INF, 5.0)]
    after = [(0.001, 15.0), (0.005, 25.0), (INF, 25.0)]  # 10 under 1 ms, 10 between 1 and 5 ms
    p50, calls = bucket_quantile(0.5, before, after)
    assert p50 == pytest.approx(1.0)
    assert calls == 20
    p99, _ = bucket_quantile(0.99, before, after)
    assert p99 == pytest.approx(1.0 + 4.0 * (19.8 - 10) / 10)


def test_a_quantile_in_the_last_bucket_is_its_lower_bound_and_none_without_observations() -> None:
    empty = [(0.001, 0.0), (0.005, 0.0), (INF, 0.0)]
    assert bucket_quantile(0.5, empty, [(0.001, 0.0), (0.005, 0.0), (INF, 4.0)]) == (5.0, 4)
    assert bucket_quantile(0.5, empty, empty) == (None, 0)
    assert bucket_quantile(0.5, [], []) == (None, 0)
    # A series first exported during the step: nothing was read before it.
    first, calls = bucket_quantile(0.5, [], [(0.001, 2.0), (INF, 2.0)])
    assert first == pytest.approx(0.5)
    assert calls == 2
