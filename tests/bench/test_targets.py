"""The report judges each of the issue's targets on the run's own figures."""

from __future__ import annotations

from bench.events_bench import Figure
from bench.rpc_bench import Result, RpcRun
from bench.saga_bench import SagaResult, Step
from bench.targets import judge, keeps_up, table

RPCS = {
    "CheckStock (stock)": 9.5,
    "ValidatePaymentMethod (payment)": 12.7,
    "SearchProducts (search)": 43.4,
    "ValidateToken (auth)": 8.1,
    "FindNearbyArtisans (geo)": 15.9,
}


def events(*, fast_stream: float = 3.37, latency_at: int = 1000, p99: float = 6.0) -> list[Figure]:
    return [
        Figure("consume rate, no-op handler", 9_950.0, 9_567.0, "msg/s", "raw nats-py pull loop"),
        Figure("consume rate vs FastStream", 2_949.0 * fast_stream, 2_949.0, "msg/s", "FastStream"),
        Figure("relay publish rate", 8_704.0, 12_665.0, "msg/s", "raw publish_async"),
        Figure(f"latency p99 at {latency_at}/s", p99, 1.6, "ms", "raw publish -> receive"),
    ]


def rpcs(check_stock_rps: float = 2_827.0, rss: float = 90.6) -> RpcRun:
    results = [
        Result(rpc, in_flight, 1.0, p99 if in_flight == 16 else 2.0, rps, 1.0, 2.0, 3_267.0)
        for rpc, p99 in RPCS.items()
        for in_flight, rps in ((1, 900.0), (16, check_stock_rps if rpc.startswith("CheckStock") else 1_500.0))
    ]
    return RpcRun(results, {"catalog": rss, "inventory": 72.7})


def step(offered: int, p99: float, *, confirmed: int | None = None, sustained: float | None = None) -> Step:
    sent = offered * 10
    return Step(
        offered, sent, sent if confirmed is None else confirmed, sustained or offered * 0.99, p99 / 4, p99
    )


def saga(*steps: Step) -> SagaResult:
    return SagaResult(list(steps), {"orders": 86.9, "catalog": 79.9})


def test_every_target_is_judged_on_the_figure_it_names() -> None:
    verdicts = judge(
        events(), rpcs(), saga(step(100, 265.5), step(200, 713.9), step(300, 2030.9)), 12.8, 100_000
    )
    assert [v.met for v in verdicts] == [
        True,  # consume rate 3.37× FastStream
        True,  # 1.04× the raw pull loop
        True,  # relay 0.69× publish_async
        True,  # commit -> handler p99 6.0 ms
        True,  # CheckStock 0.87× the echo server
        True,  # stock p99 9.5 ms
        True,  # payment
        False,  # search 43.4 ms
        True,  # auth
        True,  # geo
        False,  # saga p99 713.9 ms at 200/s
        True,  # RSS
        True,  # make run 12.8 s
    ]
    assert verdicts[4].figure == "0.87× (2,827 against 3,267 rps)"
    assert verdicts[7].target == "search p99 < 30 ms at 16 in flight (SearchProducts)"
    assert verdicts[10].figure == (
        "198.0 confirmed/s at 200 offered (2,000 of 2,000), p99 714 ms; p99 under 300 ms up to 100 offered/s"
    )
    assert verdicts[11].figure == "the largest 90.6 MB (catalog)"


def test_each_bound_is_strict_where_the_target_says_under_and_inclusive_where_it_says_at_least() -> None:
    at_bounds = judge(
        events(fast_stream=3.0, p99=10.0),
        rpcs(check_stock_rps=3_267.0 * 0.85, rss=100.0),
        saga(),
        20.0,
        100_000,
    )
    met = {v.target: v.met for v in at_bounds}
    assert met["consume rate ≥ 3× FastStream's"] is True
    assert met["commit → handler p99 < 10 ms at 1,000 events/s"] is False
    assert met["CheckStock ≥ 0.85× the echo server's rps at 16 in flight"] is True
    assert met["each service < 100 MB RSS"] is False
    assert met["`make run` ready < 20 s"] is False
    below = judge(events(fast_stream=2.99), rpcs(check_stock_rps=3_267.0 * 0.849), saga(), 19.9, 100_000)
    met = {v.target: v.met for v in below}
    assert met["consume rate ≥ 3× FastStream's"] is False
    assert met["CheckStock ≥ 0.85× the echo server's rps at 16 in flight"] is False
    assert met["`make run` ready < 20 s"] is True


def test_the_saga_keeps_up_only_with_every_order_confirmed_at_about_the_offered_rate() -> None:
    assert keeps_up(step(200, 290.0))
    assert not keeps_up(step(200, 300.0))  # p99 not under 300 ms
    assert not keeps_up(step(200, 250.0, confirmed=1999))  # an order never confirmed
    assert not keeps_up(step(200, 250.0, sustained=150.0))  # confirmed well below the offered rate
    # The first step at 200 orders/s or more decides; the others only say how far the p99 held.
    verdict = judge(
        events(), rpcs(), saga(step(150, 280.0), step(200, 290.0), step(300, 900.0)), 12.0, 100_000
    )[10]
    assert verdict.met is True
    assert verdict.figure.endswith("p99 290 ms; p99 under 300 ms up to 200 offered/s")


def test_what_a_profile_did_not_measure_is_said_rather_than_judged() -> None:
    quick = judge(events(latency_at=200), rpcs(), saga(step(20, 60.0), step(100, 340.0)), None, 10_000)
    by_name = {v.target: v for v in quick}
    latency = by_name["commit → handler p99 < 10 ms at 1,000 events/s"]
    assert latency.met is None
    assert latency.note == "not measured at 1,000 events/s (only latency p99 at 200/s)"
    search = by_name["search p99 < 30 ms at 16 in flight (SearchProducts)"]
    assert search.met is False  # judged, and said to be over a smaller catalogue
    assert search.note == "over 10,000 products, where the target is for 100,000"
    saga_verdict = quick[10]
    assert saga_verdict.met is None
    assert saga_verdict.figure == "p99 under 300 ms up to 20 offered/s"
    assert saga_verdict.note == "no step at 200 orders/s (the highest offered 100/s)"
    assert by_name["`make run` ready < 20 s"].met is None
    rows = table(quick)
    assert rows[0].startswith("9 of the 10 targets this run measured are met (3 not measured).")
    assert rows[7] == (
        "| commit → handler p99 < 10 ms at 1,000 events/s | not measured at 1,000 events/s"
        " (only latency p99 at 200/s) | not measured |"
    )
    assert rows[11] == (
        "| search p99 < 30 ms at 16 in flight (SearchProducts) | 43.40 ms (the echo server's 2.00);"
        " over 10,000 products, where the target is for 100,000 | **no** |"
    )
