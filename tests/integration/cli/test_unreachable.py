"""A command pointed at a server that is not there says so in one sentence, no traceback."""

from __future__ import annotations

import os
import socket

import pytest

from tests.support.cli import run_a4co


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("command", [["status"], ["dlq", "list"], ["events", "tail", "--count", "1"]])
async def test_an_unreachable_server_is_reported_plainly(command: list[str], tmp_path: object) -> None:
    url = f"nats://127.0.0.1:{closed_port()}"
    code, text = await run_a4co(
        *command, env=dict(os.environ, A4CO_NATS_URL=url, A4CO_DATA_DIR=str(tmp_path))
    )
    assert code == 2, text
    assert f"cannot reach NATS at {url}" in text
    assert "Traceback" not in text


async def run_check(tmp_path: object, **env: str) -> tuple[int, str]:
    environ = {k: v for k, v in os.environ.items() if k != "A4CO_DATABASE_URL"}
    return await run_a4co("check", env={**environ, **env, "A4CO_DATA_DIR": str(tmp_path)})


async def test_check_without_a_database_says_where_to_point_it(tmp_path: object) -> None:
    code, text = await run_check(tmp_path)
    assert code == 2, text
    assert "no database" in text
    assert "Traceback" not in text
    url = f"postgresql://a4co@127.0.0.1:{closed_port()}/a4co"
    code, text = await run_check(tmp_path, A4CO_DATABASE_URL=url)
    assert code == 2, text
    assert "cannot check the database" in text
    assert "Traceback" not in text


async def test_a_wrong_tls_setting_is_named(tmp_path: object) -> None:
    env = dict(os.environ, A4CO_TLS_CLIENT_AUTH="maybe", A4CO_DATA_DIR=str(tmp_path))
    code, text = await run_a4co("status", env=env)
    assert code == 2, text
    assert "A4CO_TLS_CLIENT_AUTH='maybe': 1 or 0" in text
    assert "Traceback" not in text
