"""A command pointed at a NATS server that is not there says so in one sentence, no traceback."""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import pytest


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("command", [["status"], ["dlq", "list"], ["events", "tail", "--count", "1"]])
async def test_an_unreachable_server_is_reported_plainly(command: list[str], tmp_path: object) -> None:
    url = f"nats://127.0.0.1:{closed_port()}"
    env = dict(os.environ, A4CO_NATS_URL=url, A4CO_DATA_DIR=str(tmp_path), COLUMNS="200")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *command,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 2, text
    assert f"cannot reach NATS at {url}" in text
    assert "Traceback" not in text
