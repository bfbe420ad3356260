"""Compare the metrics the dashboards and alert rules use with those the services export."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterable

from prometheus_client import REGISTRY

# Ours, and the process's own from prometheus-client's process collector (`process_start_time_seconds`).
METRIC = re.compile(r"\b(?:a4co|process)_[a-z_]+")
SUFFIXES = ("_bucket", "_count", "_sum")


def referenced(expressions: Iterable[str]) -> set[str]:
    """Every a4co or process metric name an expression mentions."""
    return {name for expr in expressions for name in METRIC.findall(expr)}


def exported(port: int) -> set[str]:
    """The metric names a service's /metrics declares (`# TYPE` lines), with or without samples."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def coalesced(kind: str, statistic: str = "sum") -> float:
    """This process's `a4co_coalesced_callers{kind}` so far: its `sum` the callers served, its
    `count` the round trips (services/platform/coalesce.py)."""
    return REGISTRY.get_sample_value(f"a4co_coalesced_callers_{statistic}", {"kind": kind}) or 0.0


def missing(used: set[str], available: set[str]) -> set[str]:
    """Names used but exported by no service (histogram series count as their histogram)."""

    def known(name: str) -> bool:
        base = next((name[: -len(s)] for s in SUFFIXES if name.endswith(s)), name)
        return name in available or base in available

    return {name for name in used if not known(name)}
