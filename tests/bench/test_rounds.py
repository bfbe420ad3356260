"""A figure and its baseline are measured in alternated rounds and pooled."""

from __future__ import annotations

import asyncio
import os

import pytest

from bench.events_bench import Figure, alternated, combined_rate, report
from bench.rpc_bench import WARM_UP, Result, Rounds, calls_table


def test_each_round_measures_everything_in_the_order_opposite_to_the_round_before() -> None:
    assert alternated(3, ["echo", "a", "b"]) == [
        (0, "echo"),
        (0, "a"),
        (0, "b"),
        (1, "b"),
        (1, "a"),
        (1, "echo"),
        (2, "echo"),
        (2, "a"),
        (2, "b"),
    ]
    assert alternated(1, ["x", "y"]) == [(0, "x"), (0, "y")]


def test_rounds_of_equal_counts_combine_as_their_messages_over_their_time() -> None:
    # 1,000 messages at 1,000/s (1 s) and 1,000 at 4,000/s (0.25 s): 2,000 in 1.25 s.
    assert combined_rate([1000.0, 4000.0]) == pytest.approx(1600.0)
    assert combined_rate([500.0]) == 500.0


def test_a_rate_figure_gives_the_ratio_of_each_round_beside_the_pooled_one() -> None:
    rate = Figure("relay publish rate", 1600.0, 2000.0, "msg/s", "raw", [1000.0, 4000.0], [2000.0, 2000.0])
    latency = Figure("latency p99 at 1000/s", 4.0, 1.0, "ms", "raw")
    assert rate.round_ratios == [0.5, 2.0]
    assert latency.round_ratios == []
    rows = report([rate, latency]).splitlines()[2:]
    assert rows[0] == "| relay publish rate | 1,600.0 msg/s | 2,000.0 msg/s | 0.80 | 0.50 / 2.00 | raw |"
    assert rows[1] == "| latency p99 at 1000/s | 4.0 ms | 1.0 ms | 4.00 | - | raw |"


async def test_an_rpc_s_rounds_pool_their_calls_time_and_cpu() -> None:
    answered = 0

    async def call() -> None:
        nonlocal answered
        answered += 1
        await asyncio.sleep(0)

    rounds = Rounds({"load generator": os.getpid()})
    await rounds.run(call, 30, 4)
    await rounds.run(call, 50, 4)
    assert answered == 30 + 50 + 2 * WARM_UP
    assert len(rounds.latencies) == 80
    assert len(rounds.rates) == 2
    # The pooled rate is the calls over the rounds' time, between the two rounds' own rates.
    assert rounds.rps == pytest.approx(80 / (30 / rounds.rates[0] + 50 / rounds.rates[1]))
    assert min(rounds.rates) <= rounds.rps <= max(rounds.rates)
    assert set(rounds.cpu_us) == {"load generator"}
    assert rounds.cpu_us["load generator"] >= 0


def test_the_rpc_table_gives_each_round_s_ratio_against_the_echo_server_of_that_round() -> None:
    result = Result(
        "CheckStock (stock)", 16, 5.0, 9.0, 3000.0, 4.0, 7.0, 4000.0, {}, {},
        rps_rounds=[2700.0, 3300.0], baseline_rps_rounds=[3600.0, 4400.0],
    )  # fmt: skip
    assert result.round_ratios == pytest.approx([0.75, 0.75])
    row = calls_table([result]).splitlines()[2]
    assert row.endswith("| 3,000 | 4.00 | 7.00 | 4,000 | 0.75 | 0.75 / 0.75 |")
