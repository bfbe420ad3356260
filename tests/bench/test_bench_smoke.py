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
