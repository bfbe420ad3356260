"""What every benchmark script shares: its command line, real servers, and where results go."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column

from a4co.identity.v1 import identity_service_pb2 as identity_pb
from a4co.identity.v1 import identity_service_pb2_grpc as identity_grpc
from services.platform.local_servers import LocalServers, ServerUrls

S = TypeVar("S")
R = TypeVar("R")


# What a benchmark calls as each of its steps starts, with what the step measures.
Step = Callable[[str], None]


@contextlib.contextmanager
def progress_bar(console: Console, total: int) -> Iterator[Step]:
    """A bar of a run's `total` steps while it runs. The step function is called as each step
    starts, with what it measures: the step before counts as done, the bar names the new one, and
    the line is logged above the bar (with its time), so the finished steps stay on the screen.
    Leaving the block completes the last step."""
    # The bar and the counts first, the step's name last: on a narrow terminal the name is what is
    # cut short.
    columns = (
        SpinnerColumn(),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
    )
    with Progress(*columns, console=console, expand=True) as bar:
        task = bar.add_task("starting", total=total)
        started = 0

        def step(message: str) -> None:
            nonlocal started
            if started:
                bar.advance(task)
            started += 1
            bar.update(task, description=message)
            bar.console.log(message, _stack_offset=2)  # where the benchmark reported it
            bar.refresh()

        yield step
        bar.update(task, completed=started)


async def sign_up(identity: identity_grpc.IdentityServiceAsyncStub, role: identity_pb.Role.ValueType) -> str:
    """A new account with `role` under a fresh address; its access token (sign-up starts the
    account's first session)."""
    signed_up = await identity.Register(
        identity_pb.RegisterRequest(
            email=f"bench-{uuid.uuid4().hex[:8]}@a4co.es",
            password="bench-password-1",
            display_name="Bench",
            role=role,
        )
    )
    return signed_up.tokens.access_token


def machine_speed_ms(repeat: int = 3) -> float:
    """Milliseconds a fixed pure-Python loop takes here, best of `repeat`: how fast this machine
    runs the interpreter at the moment. On a shared host it changes between runs, and within one;
    figures measured against a baseline in the same run follow it out, the saga's absolute
    latencies do not."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i
        best = min(best, time.perf_counter() - started)
    return best * 1000


def rss_mb(pid: int) -> float:
    """A process's resident memory in MB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _listening_inodes(port: int | None, path: str | None) -> set[str]:
    inodes = set()
    if path is not None:
        # Num RefCount Protocol Flags Type St Inode Path: the path, last, may hold spaces.
        for row in _table("/proc/net/unix", columns=8):
            if len(row) == 8 and row[7] == path:
                inodes.add(row[6])
    for table in ("/proc/net/tcp", "/proc/net/tcp6") if port else ():
        for cells in _table(table):
            if cells[3] == "0A" and int(cells[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(cells[9])
    return inodes


def _table(name: str, columns: int = 0) -> list[list[str]]:
    """The rows of a /proc/net table, split into at most `columns` cells (0: no limit)."""
    try:
        return [row.split(maxsplit=columns - 1) for row in Path(name).read_text().splitlines()[1:]]
    except OSError:
        return []


def listening_pid(port: int | None = None, path: str | None = None) -> int | None:
    """The process of this machine listening on TCP `port` or the Unix socket `path`, if any (and if
    /proc shows it)."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port, path)}
    for proc in Path("/proc").iterdir():
        if not wanted or not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in wanted for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:  # gone, or not ours to look at
            continue
    return None


def server_pids(urls: ServerUrls) -> dict[str, int]:
    """PostgreSQL's, NATS's and Redis's processes, when they run on this machine."""
    found = {}
    for name, url in (("PostgreSQL", urls.database_url), ("NATS", urls.nats_url), ("Redis", urls.redis_url)):
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        via_socket_dir = query.get("host", "").startswith("/")  # PostgreSQL through its socket
        if parts.scheme == "unix":  # Redis through its socket
            pid = listening_pid(path=unquote(parts.path))
        elif parts.hostname in ("127.0.0.1", "localhost", "::1") or via_socket_dir:
            pid = listening_pid(parts.port or int(query.get("port", "0")))
        else:
            continue
        if pid is not None:
            found[name] = pid
    return found


def _owners(pids: Mapping[str, int]) -> tuple[dict[int, str], dict[int, list[str]]]:
    """Each process on the machine that belongs to a named one (itself, or a descendant that is
    not named itself: PostgreSQL's backends count for PostgreSQL), and every process's stat
    fields after its name."""
    parent: dict[int, int] = {}
    stats: dict[int, list[str]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        pid = int(proc.name)
        parent[pid], stats[pid] = int(fields[1]), fields
    named = {pid: name for name, pid in pids.items()}
    owner = {}
    for pid in stats:
        ancestor = pid
        while ancestor not in named and ancestor in parent:
            ancestor = parent[ancestor]
        if ancestor in named:
            owner[pid] = named[ancestor]
    return owner, stats


def cpu_seconds(pids: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds (user and system) used so far by each named process with its descendants that
    are not named themselves (PostgreSQL's backends count for PostgreSQL), from /proc."""
    owner, stats = _owners(pids)
    return _cpu(pids, owner, stats)


def cpu_and_waits(pids: Mapping[str, int]) -> tuple[dict[str, float], dict[str, float] | None]:
    """`cpu_seconds`, and the seconds the threads of each named process (with its descendants,
    as `cpu_seconds`) have spent runnable but waiting for a core so far, from one look at the
    processes: the second field of each thread's /proc/<pid>/task/<tid>/schedstat. Threads that
    have ended are not counted. The waits are None when the kernel keeps no scheduler
    statistics."""
    owner, stats = _owners(pids)
    return _cpu(pids, owner, stats), _waits(pids, owner)


def main_threads(pids: Mapping[str, int]) -> dict[str, tuple[float, float]]:
    """For each named process, the seconds its main thread (a service's event loop) has run and
    has waited, runnable, for a core so far: its /proc/<pid>/task/<pid> `stat` and `schedstat`.
    A process that ended, or a kernel without scheduler statistics, gives no entry."""
    found = {}
    for name, pid in pids.items():
        task = Path(f"/proc/{pid}/task/{pid}")
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            waited_ns = int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        found[name] = ((int(fields[11]) + int(fields[12])) / TICKS_PER_S, waited_ns / 1e9)
    return found


def _cpu(pids: Mapping[str, int], owner: dict[int, str], stats: dict[int, list[str]]) -> dict[str, float]:
    totals = dict.fromkeys(pids, 0.0)
    for pid, name in owner.items():
        # utime, stime and the reaped children's cutime and cstime.
        totals[name] += sum(int(f) for f in stats[pid][11:15]) / TICKS_PER_S
    return totals


def _waits(pids: Mapping[str, int], owner: dict[int, str]) -> dict[str, float] | None:
    if not Path("/proc/self/schedstat").exists():
        return None
    totals = dict.fromkeys(pids, 0.0)
    for pid, name in owner.items():
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:  # ended meanwhile
            continue
        for task in tasks:
            try:
                waited_ns = int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
            totals[name] += waited_ns / 1e9
    return totals


def run_benchmark(
    doc: str,
    name: str,
    sizes: tuple[S, S],
    measure: Callable[[ServerUrls, S, Step], Coroutine[Any, Any, R]],
    steps: Callable[[S], int],
    report: Callable[[R], str],
    to_json: Callable[[R], object],
) -> None:
    """Parse `--quick` and `--out`, start servers (or use A4CO_*_URL), measure with a progress bar
    of its `steps`, print, save.

    `sizes` is (full, quick). Results go to `<out>/<UTC timestamp>/<name>.md` and `.json`.
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    ns = parser.parse_args()
    chosen = sizes[1] if ns.quick else sizes[0]
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalServers(Path(tmp), durable=False) as urls,
        progress_bar(Console(), steps(chosen)) as step,
    ):
        result = asyncio.run(measure(urls, chosen, step))
    table = report(result)
    print(table)
    out = ns.out / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(table + "\n")
    (out / f"{name}.json").write_text(json.dumps(to_json(result), indent=2))
    print(f"\nwritten to {out}")
