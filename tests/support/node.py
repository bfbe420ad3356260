"""Node.js programs of clients/node (another team's client: @grpc/grpc-js and the .proto files),
run as a subprocess."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.support.processes import communicate

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "node"


def node() -> str:
    """The `node` executable, once clients/node's packages are installed (`make test` runs `npm
    ci` for them). Without either, the test is skipped on a developer's machine and fails in CI,
    where they must be."""
    path = shutil.which("node")
    if path is None or not (CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        message = "needs Node.js and clients/node's packages: `make test` installs them with npm"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


async def run_node(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 90
) -> tuple[int, str, str]:
    """`node <args>` in clients/node: its exit code, standard output and standard error."""
    proc = await asyncio.create_subprocess_exec(
        node(), *args, cwd=CLIENT, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await communicate(proc, timeout)
    return int(proc.returncode or 0), out.decode(), err.decode()
