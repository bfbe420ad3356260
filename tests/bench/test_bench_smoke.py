"""The benchmark harness runs end to end at tiny sizes, so that it cannot rot."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from rich.console import Console

from bench.events_bench import SMOKE, measure, report, steps
from bench.saga_bench import CALLS, STAGES
from services.platform.local_servers import ServerUrls


async def test_event_benchmark_runs_and_reports_every_figure(urls: ServerUrls) -> None:
    reported: list[str] = []
    figures = await measure(urls, SMOKE, progress=reported.append)
    # The progress bar's length is the number of steps reported.
    assert len(reported) == steps(SMOKE)
    names = [f.name for f in figures]
    assert names[0] == "consume rate, no-op handler"
    assert any(n.startswith("latency p99") for n in names)
    for figure in figures:
        assert figure.ours > 0, figure
        assert figure.baseline > 0, figure
        assert math.isfinite(figure.ratio), figure
    # Every rate was measured in each round, beside its baseline of the same round.
    rates = [f for f in figures if f.unit == "msg/s"]
    assert [f.name for f in rates] == [
        "consume rate, no-op handler",
        "consume rate vs FastStream",
        "relay publish rate",
    ]
    assert all(len(f.ours_rounds) == len(f.baseline_rounds) == SMOKE.rounds for f in rates)
    table = report(figures)
    assert table.count("\n") == len(figures) + 1


async def test_rpc_benchmark_runs_every_service_as_a_process(urls: ServerUrls) -> None:
    from bench.rpc_bench import SERVED_BY
    from bench.rpc_bench import SMOKE as RPC_SMOKE
    from bench.rpc_bench import measure as measure_rpcs
    from bench.rpc_bench import report as report_rpcs
    from bench.rpc_bench import steps as rpc_steps

    reported: list[str] = []
    run = await measure_rpcs(urls, RPC_SMOKE, progress=reported.append)
    assert len(reported) == rpc_steps(RPC_SMOKE)
    results = run.results
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
        assert len(r.rps_rounds) == len(r.baseline_rps_rounds) == RPC_SMOKE.rounds
        # The pooled rate is the rounds' calls over their time: within the rounds' own rates.
        assert min(r.rps_rounds) <= r.rps * 1.000001
        assert r.rps <= max(r.rps_rounds) * 1.000001
    assert set(run.rss_mb) == {"identity", "inventory", "payments", "catalog", "geo"}
    assert all(mb > 0 for mb in run.rss_mb.values())
    # CPU is read in clock ticks (10 ms): summed over the calls, each side shows some.
    assert sum(r.cpu_us[SERVED_BY[r.rpc]] for r in results) > 0
    assert sum(r.cpu_us["load generator"] for r in results) > 0
    assert sum(r.baseline_cpu_us["echo server"] for r in results) > 0
    assert all(r.cpu_us.keys() >= {"PostgreSQL", "NATS", "Redis", *SERVED_BY.values()} for r in results)
    at_16 = [r for r in results if r.in_flight == 16]
    cpu_lines = 3 + len(at_16) + 2  # title, blank, header, separator, rows; blank after
    assert report_rpcs(run).count("\n") == len(results) + 1 + cpu_lines + 3 + len(run.rss_mb)


async def test_the_whole_report_runs_at_smoke_sizes(urls: ServerUrls, tmp_path: Path) -> None:
    from bench import run

    screen = io.StringIO()
    results = await run.measure(
        urls, run.PROFILES["smoke"], with_launcher=False, bar=Console(file=screen, width=160)
    )
    # The progress bar ends complete, every step logged above it.
    total = run.steps(run.PROFILES["smoke"], with_launcher=False)
    shown = screen.getvalue()
    assert f" {total}/{total} " in shown
    assert "saga at 5 orders/s" in shown
    saga = results["saga"]
    assert [s.offered_per_s for s in saga.steps] == [5]
    assert saga.steps[0].confirmed > 0
    cpu = saga.steps[0].cpu_ms_per_order
    assert {"orders", "payments", "inventory", "PostgreSQL", "NATS", "Redis", "load generator"} <= set(cpu)
    assert cpu["orders"] > 0
    assert cpu["PostgreSQL"] > 0
    if Path("/proc/self/schedstat").exists():  # time waiting for a core, for the same processes
        assert set(saga.steps[0].waited_ms_per_order) == set(cpu)
        assert all(ms >= 0 for ms in saga.steps[0].waited_ms_per_order.values())
        assert saga.steps[0].threads_waiting is not None
    assert saga.rss_mb
    assert all(mb > 0 for mb in saga.rss_mb.values())
    # Every confirmed order's events were read back from the streams and split into stages.
    step = saga.steps[0]
    assert step.staged_orders == step.confirmed
    assert [s.name for s in step.stages] == [name for name, _, _ in STAGES]
    assert all(0 <= s.p50_ms <= s.p99_ms for s in step.stages)
    # Every synchronous call of the step was timed by its caller and by its handler.
    assert [c.method for c in step.calls] == [method for method, _, _ in CALLS]
    for call in step.calls:
        assert call.calls >= step.sent, call
        timed = (call.caller_p50_ms, call.caller_p99_ms, call.handler_p50_ms, call.handler_p99_ms)
        assert all(ms is not None and ms >= 0 for ms in timed), call
    out = run.write(results, tmp_path)
    assert {p.name for p in out.iterdir()} == {
        "report.md",
        "results.json",
        "latency.png",
        "throughput.png",
        "stages.png",
    }
    text = (out / "report.md").read_text()
    assert "## The order saga" in text
    # The report opens with the targets, judged on this run: at smoke sizes the event latency at
    # 1,000 events/s, the saga at 200 orders/s and make run's start are not measured.
    judged = text.split("## Targets")[1].split("## Events")[0]
    assert "of the 10 targets this run measured are met (3 not measured)." in judged
    assert judged.count("\n| ") == 1 + 13  # the header and a row per target
    assert "| saga ≥ 200 orders/s sustained, p99 CreateOrder → CONFIRMED < 300 ms |" in judged
    cpu_table = text.split("CPU per confirmed order")[1].split("## Memory")[0]
    assert "| orders |" in cpu_table
    assert "waited for a core, ms per order |" in cpu_table
    assert f"| 5 | {step.staged_orders} | " in text.split("Where an order's time goes")[1]
    assert "| catalog |" in text.split("## Memory (RSS) of each service under load")[1]
    loops = step.loop_shares
    assert {"orders", "payments", "inventory", "load generator"} <= set(loops)
    assert all(0 <= ran <= 1.5 and waited >= 0 for ran, waited in loops.values())
    assert loops["load generator"][0] > 0
    assert "| orders | " in text.split("Each Python process's event loop")[1]
    before, after = results["speed_ms"]
    assert before > 0
    assert after > 0
    assert f"took {before:.0f} ms before the run and {after:.0f} ms after it" in text
    saved = json.loads((out / "results.json").read_text())
    assert saved["machine_speed_ms"] == {"before": before, "after": after}
    assert len(saved["targets"]) == 13
    assert [t["met"] for t in saved["targets"]].count(None) == 3
    # How many rounds each figure was measured in is said and saved.
    rounds = run.PROFILES["smoke"]["events"].rounds, run.PROFILES["smoke"]["rpc"].rounds
    assert f"measured in {rounds[0]} rounds alternated with its baseline's" in text
    assert f"take turns in {rounds[1]} rounds of" in text
    assert saved["sizes"]["events"]["rounds"] == rounds[0]
    assert saved["sizes"]["rpc"]["rounds"] == rounds[1]
    assert all(len(c["rps_rounds"]) == rounds[1] for c in saved["rpc"]["calls"])
