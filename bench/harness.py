"""What every benchmark script shares: its command line, real servers, and where results go."""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from services.platform.local_servers import LocalServers, ServerUrls

S = TypeVar("S")
R = TypeVar("R")


def rss_mb(pid: int) -> float:
    """A process's resident memory in MB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_benchmark(
    doc: str,
    name: str,
    sizes: tuple[S, S],
    measure: Callable[[ServerUrls, S], Coroutine[Any, Any, R]],
    report: Callable[[R], str],
    to_json: Callable[[R], object],
) -> None:
    """Parse `--quick` and `--out`, start servers (or use A4CO_*_URL), measure, print, save.

    `sizes` is (full, quick). Results go to `<out>/<UTC timestamp>/<name>.md` and `.json`.
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    ns = parser.parse_args()
    chosen = sizes[1] if ns.quick else sizes[0]
    with tempfile.TemporaryDirectory() as tmp, LocalServers(Path(tmp), durable=False) as urls:
        result = asyncio.run(measure(urls, chosen))
    table = report(result)
    print(table)
    out = ns.out / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(table + "\n")
    (out / f"{name}.json").write_text(json.dumps(to_json(result), indent=2))
    print(f"\nwritten to {out}")
