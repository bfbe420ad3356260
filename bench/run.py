"""`make bench` / `make bench-quick`: every figure of the performance report, beside baselines
measured in the same run, written to bench/results/<timestamp>/ (report.md, results.json, plots).

1. events: consume rate (raw nats-py pull loop, FastStream), relay publish rate (raw
   publish_async), commit -> handler latency at steady offered rates;
2. the five sync RPCs at 1 and 16 in flight beside a bare grpc.aio echo server (search over a
   catalogue of 100,000 products in the full run), the CPU each call cost each process at 16 in
   flight, and the memory of their services after them;
3. the order saga under stepped offered load, every service a process, the CPU per confirmed
   order of each process at the busiest step, and the memory of each service after the heaviest
   step;
4. `make run`'s time to ready.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import events_bench, rpc_bench, saga_bench, targets
from bench.harness import machine_speed_ms, progress_bar
from services.platform.local_servers import LocalServers, ServerUrls

console = Console()
PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "events": events_bench.FULL,
        "rpc": rpc_bench.FULL,
        "saga_rates": (25, 50, 100, 150, 200, 300),
        "saga_seconds": 10.0,
    },
    "quick": {
        "events": events_bench.QUICK,
        "rpc": rpc_bench.QUICK,
        "saga_rates": (20, 50, 100),
        "saga_seconds": 3.0,
    },
    "smoke": {"events": events_bench.SMOKE, "rpc": rpc_bench.SMOKE, "saga_rates": (5,), "saga_seconds": 1.0},
}


def steps(profile: dict[str, Any], with_launcher: bool) -> int:
    """How many steps `measure` reports for a profile (the progress bar's length)."""
    return (
        events_bench.steps(profile["events"])
        + rpc_bench.steps(profile["rpc"])
        + saga_bench.steps(profile["saga_rates"])
        + int(with_launcher)
    )


async def measure(
    urls: ServerUrls, profile: dict[str, Any], with_launcher: bool, bar: Console | None = None
) -> dict[str, Any]:
    """Run every workload of a profile, with a progress bar of its steps on `bar` (the
    console by default)."""
    speed_before = machine_speed_ms()
    with progress_bar(bar or console, steps(profile, with_launcher)) as progress:
        events = await events_bench.measure(urls, profile["events"], progress)
        rpcs = await rpc_bench.measure(urls, profile["rpc"], progress)
        saga = await saga_bench.measure(urls, profile["saga_rates"], profile["saga_seconds"], progress)
        ready = (0.0, 0.0)
        if with_launcher:
            progress("make run's time to ready: a first start with the demo, then a restart")
            ready = await saga_bench.run_time_to_ready()
    speed = (speed_before, machine_speed_ms())
    sizes = {"events": profile["events"], "rpc": profile["rpc"]}
    return {"events": events, "rpc": rpcs, "saga": saga, "ready": ready, "speed_ms": speed, "sizes": sizes}


def report(results: dict[str, Any]) -> str:
    """The Markdown report."""
    saga: saga_bench.SagaResult = results["saga"]
    rpcs: rpc_bench.RpcRun = results["rpc"]
    level = os.environ.get("A4CO_LOG_LEVEL", "INFO")
    access = ", with the access log (a line per call)" if level.upper() in ("INFO", "DEBUG") else ""
    loop = os.environ.get("A4CO_EVENT_LOOP", "uvloop")
    before, after = results["speed_ms"]
    events: events_bench.Sizes = results["sizes"]["events"]
    rpc: rpc_bench.Sizes = results["sizes"]["rpc"]
    lines = ["# a4co benchmark", "",
             f"The services run as `make run` starts them: on {loop}, logs at {level}{access}; but"
             " on a NATS without `make run`'s user for each service (their permissions measured at"
             " no cost: docs/performance-history.md), as the raw baselines share it.", "",
             f"This machine's speed: a fixed pure-Python loop (2,000,000 additions, best of 3) took"
             f" {before:.0f} ms before the run and {after:.0f} ms after it. The ratios compare figures"
             " measured in the same run; the saga's latencies are absolute and move with it.", "",
             "## Targets", "", *targets.table(verdicts(results)), "",
             "## Events", "",
             f"Each rate and latency is measured in {events.rounds} rounds alternated with its baseline's"
             " (one order, then the reverse): a rate is the rounds' messages over their summed time, a latency"
             " pools the rounds' samples.", "",
             events_bench.report(results["events"]), "", "## Synchronous RPCs", "",
             f"At each concurrency the echo server and the five RPCs take turns in {rpc.rounds} rounds of"
             f" {rpc.per_round:,} calls (one order, then the reverse); each figure pools its rounds,"
             " and each round's ratio compares a call with the echo server's of the same round."
             f" Successive searches ask for the first {rpc_bench.SEARCH_PAGES} pages of one query in turn,"
             f" successive nearby searches for {rpc_bench.NEARBY_PLACES} places in turn.", "",
             rpc_bench.calls_table(rpcs.results), "", rpc_bench.cpu_table(rpcs.results), "", "## The order saga", "",
             "| offered orders/s | sent | confirmed | sustained confirmed/s | p50 ms CreateOrder→CONFIRMED | p99 ms |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    lines += [
        f"| {s.offered_per_s} | {s.sent:,} | {s.confirmed:,} | {s.sustained_per_s:.1f} | {s.p50_ms:.1f} | {s.p99_ms:.1f} |"
        for s in saga.steps
    ]
    lines += ["", *saga_stages_table(saga.steps)]
    lines += ["", *saga_calls_table(saga.steps)]
    lines += ["", *saga_cpu_table(saga.steps)]
    lines += ["", *saga_loops_table(saga.steps)]
    lines += [
        "",
        "## Memory (RSS) of each service under load",
        "",
        "After the RPCs at 16 in flight (the catalog holding the searched catalogue) and after the"
        " saga's heaviest step; '-' where the service is not part of that workload.",
        "",
        "| service | MB after the RPCs | MB after the saga |",
        "|---|---|---|",
    ]
    for name in sorted(saga.rss_mb.keys() | rpcs.rss_mb.keys()):
        cells = [f"{d[name]:.1f}" if name in d else "-" for d in (rpcs.rss_mb, saga.rss_mb)]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    first, again = results["ready"]
    lines += [
        "",
        "## `make run` time to ready",
        "",
        f"- first start (demo loaded): {first:.1f} s",
        f"- restart on the same data: {again:.1f} s",
    ]
    return "\n".join(lines) + "\n"


def _table_head(caption: str, columns: list[str]) -> list[str]:
    """A Markdown table's caption, its blank line, its header row and its rule."""
    return [caption, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def saga_stages_table(steps: list[saga_bench.Step]) -> list[str]:
    """Where an order's time went at each step: p50 / p99 ms of every stage."""
    names = saga_bench.STAGE_NAMES
    lines = _table_head(
        "Where an order's time goes, p50 / p99 ms per stage, from the time JetStream stored each"
        " event of the saga (read back after the step). Each stage starts at the one before it;"
        ' "CreateOrder answered" runs beside "OrderCreated stored", which includes the'
        " synchronous checks and orders' relay.",
        ["offered orders/s", "orders", *names],
    )
    for step in steps:
        cells = [f"{st.p50_ms:.1f} / {st.p99_ms:.1f}" for st in step.stages] or ["-"] * len(names)
        lines.append(f"| {step.offered_per_s} | {step.staged_orders:,} | " + " | ".join(cells) + " |")
    return lines


def saga_calls_table(steps: list[saga_bench.Step]) -> list[str]:
    """Each synchronous call of the saga at each step, as its caller saw it and in its handler."""
    methods = [method for method, _, _ in saga_bench.CALLS]
    lines = _table_head(
        "The synchronous calls, p50 / p99 ms as the caller saw each call (CreateOrder: the load"
        " generator; the checks: orders, each attempt) and as its handler took it (the service's"
        " own histogram). The services' figures are interpolated within their histograms' buckets"
        " (0.5, 1, 2.5, 5, 10, 25, 50, 100, 150, 200, 500 ms…). Caller minus handler is the time"
        " outside the handler: the network, gRPC's queues and the waits for a core at both ends.",
        ["offered orders/s", *(f"{m}: {side}" for m in methods for side in ("caller", "handler"))],
    )

    def ms(p50: float | None, p99: float | None) -> str:
        return "-" if p50 is None or p99 is None else f"{p50:.1f} / {p99:.1f}"

    for step in steps:
        cells = [
            f"{ms(c.caller_p50_ms, c.caller_p99_ms)} | {ms(c.handler_p50_ms, c.handler_p99_ms)}"
            for c in step.calls
        ] or ["- | -"] * len(methods)
        lines.append(f"| {step.offered_per_s} | " + " | ".join(cells) + " |")
    return lines


def saga_cpu_table(steps: list[saga_bench.Step]) -> list[str]:
    """Where the CPU of the busiest step went, per confirmed order, and the rate it allows; and
    how long each process's threads waited for a core meanwhile."""
    busiest = max(steps, key=lambda s: s.sustained_per_s)
    total, cores = busiest.cpu_ms_total, os.cpu_count() or 1
    waiting = busiest.threads_waiting
    lines = [
        f"CPU per confirmed order at the busiest step ({busiest.offered_per_s} offered/s,"
        f" {busiest.sustained_per_s:.1f} confirmed/s), from /proc: {total:.1f} ms in all, so"
        f" {cores} cores confirm at most about {1000 * cores / total if total else 0:.0f} orders/s."
        + (
            f" Meanwhile {waiting:.1f} threads on average were runnable and waiting for a core"
            " (the last column, from each thread's schedstat): a thread woken by a message or a"
            " reply queues behind them before it can handle it."
            if waiting is not None
            else ""
        ),
        "",
        "| process | ms per order | share | waited for a core, ms per order |",
        "|---|---|---|---|",
    ]
    for name, ms in sorted(busiest.cpu_ms_per_order.items(), key=lambda item: -item[1]):
        waited = busiest.waited_ms_per_order.get(name)
        lines.append(
            f"| {name} | {ms:.2f} | {100 * ms / total if total else 0:.0f} % |"
            f" {'-' if waited is None else f'{waited:.2f}'} |"
        )
    return lines


def saga_loops_table(steps: list[saga_bench.Step]) -> list[str]:
    """How busy each Python process's event loop (its main thread) was at each step."""
    shown = [s for s in steps if s.loop_shares]
    if not shown:
        return []
    busiest = max(shown, key=lambda s: s.offered_per_s)
    names = sorted(busiest.loop_shares, key=lambda n: -busiest.loop_shares[n][0])
    lines = _table_head(
        "Each Python process's event loop (its main thread: all of its Python code; gRPC's I/O has"
        " threads of its own), % of each step's time running / waiting for a core, from /proc."
        " Running and waiting near 100 % together is a loop that has no time to spare.",
        ["process", *(f"{s.offered_per_s}/s" for s in shown)],
    )
    for name in names:
        cells = []
        for step in shown:
            ran, waited = step.loop_shares.get(name, (None, None))
            cells.append("-" if ran is None or waited is None else f"{100 * ran:.0f} / {100 * waited:.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    """Latency percentiles against offered rate, throughput per workload, and where the saga's
    time goes, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    saga: saga_bench.SagaResult = results["saga"]
    written = []
    fig, ax = plt.subplots(figsize=(7, 4))
    rates = [s.offered_per_s for s in saga.steps]
    ax.plot(rates, [s.p50_ms for s in saga.steps], marker="o", label="saga p50")
    ax.plot(rates, [s.p99_ms for s in saga.steps], marker="o", label="saga p99")
    for f in results["events"]:
        if f.name.startswith("latency p99 at"):
            rate = int(f.name.split(" at ")[1].split("/")[0])
            ax.scatter(
                [rate / 10], [f.ours], marker="x", label=f"event commit→handler p99 at {rate}/s (x÷10)"
            )
    ax.set_xlabel("offered orders/s")
    ax.set_ylabel("ms")
    ax.set_title("Latency against offered rate")
    ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(out / "latency.png")
    fig.savefig(written[-1], dpi=110)
    fig, ax = plt.subplots(figsize=(8, 4))
    bars = [(f.name, f.ours, f.baseline) for f in results["events"] if f.unit == "msg/s"]
    bars += [(f"{r.rpc} @{r.in_flight}", r.rps, r.baseline_rps) for r in results["rpc"].results]
    xs = range(len(bars))
    ax.bar([x - 0.2 for x in xs], [b[1] for b in bars], width=0.4, label="a4co")
    ax.bar([x + 0.2 for x in xs], [b[2] for b in bars], width=0.4, label="baseline")
    ax.set_xticks(list(xs), [b[0] for b in bars], rotation=70, fontsize=6, ha="right")
    ax.set_ylabel("per second")
    ax.set_title("Throughput per workload")
    ax.legend()
    fig.tight_layout()
    written.append(out / "throughput.png")
    fig.savefig(written[-1], dpi=110)
    written.append(stages_plot(plt, saga.steps, out))
    plt.close("all")
    return written


def stages_plot(plt: Any, steps: list[saga_bench.Step], out: Path) -> Path:
    """Each saga step's share of an order's median time, per offered rate (stacked to 100 %),
    with the stages' medians added up above each bar."""
    names = saga_bench.STAGE_NAMES[1:]  # "CreateOrder answered" overlaps
    shown = [s for s in steps if s.stages]
    fig, ax = plt.subplots(figsize=(9, 4))
    xs = range(len(shown))
    medians = [[st.p50_ms for st in s.stages[1:]] for s in shown]
    bottoms = [0.0] * len(shown)
    for i, name in enumerate(names):
        shares = [100 * m[i] / sum(m) if sum(m) else 0.0 for m in medians]
        ax.bar(list(xs), shares, bottom=bottoms, label=name)
        bottoms = [b + v for b, v in zip(bottoms, shares, strict=True)]
    for x, m in zip(xs, medians, strict=True):
        ax.annotate(f"{sum(m):.0f} ms", (x, 101), ha="center", fontsize=7)
    ax.set_xticks(list(xs), [f"{s.offered_per_s}/s" for s in shown])
    ax.set_xlabel("offered orders/s")
    ax.set_ylabel("% of the stages' medians")
    ax.set_ylim(0, 110)
    ax.set_title("Where an order's time goes")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    path = out / "stages.png"
    fig.savefig(path, dpi=110)
    return path


def verdicts(results: dict[str, Any]) -> list[targets.Verdict]:
    """The targets, judged on this run's results."""
    rpc: rpc_bench.Sizes = results["sizes"]["rpc"]
    first_start = results["ready"][0] or None
    return targets.judge(results["events"], results["rpc"], results["saga"], first_start, rpc.search_products)


def to_json(results: dict[str, Any]) -> dict[str, Any]:
    """Everything measured, as JSON."""
    saga: saga_bench.SagaResult = results["saga"]
    return {
        "targets": [asdict(v) for v in verdicts(results)],
        "events": [asdict(f) | {"ratio": f.ratio} for f in results["events"]],
        "rpc": rpc_bench.to_json(results["rpc"]),
        "saga": [asdict(s) for s in saga.steps],
        "rss_mb": saga.rss_mb,
        "make_run_ready_s": {"first": results["ready"][0], "restart": results["ready"][1]},
        "machine_speed_ms": {"before": results["speed_ms"][0], "after": results["speed_ms"][1]},
        "sizes": {name: asdict(sizes) for name, sizes in results["sizes"].items()},
    }


def write(results: dict[str, Any], root: Path) -> Path:
    """bench/results/<timestamp>/ with report.md, results.json and the plots."""
    out = root / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(report(results))
    (out / "results.json").write_text(json.dumps(to_json(results), indent=2))
    plots(results, out)
    return out


def main() -> None:
    """Parse the profile, start the servers, measure everything, write the results."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    ns = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, LocalServers(Path(tmp), durable=False) as urls:
        results = asyncio.run(measure(urls, PROFILES[ns.profile], with_launcher=True))
    out = write(results, ns.out)
    console.print(report(results))
    console.print(f"written to {out} in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
