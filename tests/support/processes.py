"""The processes a test starts: service processes that cannot outlive it, and those found from
/proc (Linux), to check none does."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any


def processes_using(path: Path, also: str = "") -> list[int]:
    """Processes whose command line mentions `path` (servers and services of that data directory),
    and `also`. Each command line is read once: a process may exit between the listing and the read."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(path) in cmdline and also in cmdline:
                found.append(int(entry.name))
    return found


@asynccontextmanager
async def service_process(
    service: str, env: Mapping[str, str], ready: Path, *, stderr: int = asyncio.subprocess.PIPE
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m services.<service>`, as the launcher starts it, writing `ready` once it serves
    (its log on standard error, piped unless `stderr` says otherwise). Killed when the block ends
    with it still running: a test that fails half-way leaves no service behind."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"services.{service}", "--ready-file", str(ready), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def communicate(proc: asyncio.subprocess.Process, timeout: float) -> tuple[bytes, bytes]:
    """What `proc` wrote on its pipes (empty bytes for one not piped), once it exits within
    `timeout` s. Killed if it does not, or if the wait is cancelled: it does not outlive the test."""
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return out or b"", err or b""


def log_lines(stderr: bytes) -> list[dict[str, Any]]:
    """A service's JSON log lines, read from what it wrote on standard error."""
    return [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
