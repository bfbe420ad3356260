"""The benchmark harness runs end to end at tiny sizes, so that it cannot rot."""

from __future__ import annotations

import math

from bench.events_bench import SMOKE, measure, report
from services.platform.local_servers import ServerUrls


async def test_event_benchmark_runs_and_reports_every_figure(urls: ServerUrls) -> None:
    figures = await measure(urls, SMOKE, progress=lambda _: None)
    names = [f.name for f in figures]
    assert names[0] == "consume rate, no-op handler"
    assert any(n.startswith("latency p99") for n in names)
    for figure in figures:
        assert figure.ours > 0, figure
        assert figure.baseline > 0, figure
        assert math.isfinite(figure.ratio), figure
    table = report(figures)
    assert table.count("\n") == len(figures) + 1


async def test_rpc_benchmark_runs_every_service_as_a_process(urls: ServerUrls) -> None:
    from bench.rpc_bench import SMOKE as RPC_SMOKE
    from bench.rpc_bench import measure as measure_rpcs
    from bench.rpc_bench import report as report_rpcs

    results = await measure_rpcs(urls, RPC_SMOKE, progress=lambda _: None)
    assert {r.rpc.split(" ")[0] for r in results} == {
        "CheckStock",
        "ValidatePaymentMethod",
        "SearchProducts",
        "ValidateToken",
        "FindNearbyArtisans",
    }
    assert {r.in_flight for r in results} == {1, 16}
    for r in results:
        assert r.rps > 0
        assert r.baseline_rps > 0
        assert 0 < r.p50_ms <= r.p99_ms
    assert report_rpcs(results).count("\n") == len(results) + 1
