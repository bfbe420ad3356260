"""The `a4co` command line run as an operator runs it: a subprocess, its output read whole."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping

from tests.support.processes import communicate


async def run_a4co(*args: str, env: Mapping[str, str]) -> tuple[int, str]:
    """`a4co <args>` with the environment `env` (and a terminal 200 columns wide): its exit code
    and what it printed, standard output and error together."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *args,
        env={**env, "COLUMNS": "200"}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await communicate(proc, 60)
    return int(proc.returncode or 0), out.decode()
