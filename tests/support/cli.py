"""The `a4co` command line run as an operator runs it: a subprocess, its output read whole."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping

from services.platform.local_servers import ServerUrls
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


async def run_a4co_on(urls: ServerUrls, prefix: str, *args: str) -> tuple[int, str]:
    """`a4co <args>` on the test's NATS, for the deployment under `prefix`."""
    return await run_a4co(*args, env=dict(os.environ, A4CO_NATS_URL=urls.nats_url, A4CO_PREFIX=prefix))
