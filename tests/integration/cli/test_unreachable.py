"""A command pointed at a server that is not there, or not as it needs it, says so in one
sentence, no traceback."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import nats
import pytest
from nats.aio.msg import Msg

from services.platform.local_servers import ServerUrls, _bin_dir, free_port
from tests.support.cli import run_a4co
from tests.support.processes import communicate
from tests.support.stalling_proxy import StallingProxy, postgres_port
from tests.support.waiting import eventually

# The commands that read the event streams, beside status (which reports a missing JetStream in its
# table, stream by stream).
STREAM_COMMANDS = [
    ["dlq", "list"],
    ["dlq", "show", "1"],
    ["trace", "o-1"],
    ["events", "tail", "--count", "1"],
]


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


async def test_demo_of_a_marketplace_since_stopped_says_so(tmp_path: Path) -> None:
    """The addresses a `make run` wrote, nothing serving on them any more."""
    port = closed_port()
    services = {
        n: {"grpc": f"127.0.0.1:{port}"} for n in ("identity", "payments", "catalog", "orders", "loyalty")
    }
    (tmp_path / "addresses.json").write_text(json.dumps({"services": services}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("A4CO_")}
    code, text = await run_a4co("demo", "--orders", "1", env={**env, "A4CO_DATA_DIR": str(tmp_path)})
    assert code == 2, text
    said = " ".join(text.split())
    assert said.startswith("cannot reach the marketplace (failed to connect"), said
    assert f"127.0.0.1:{port}" in said, said
    assert said.endswith("start it with `make run`"), said


async def run_check(tmp_path: object, **env: str) -> tuple[int, str]:
    environ = {k: v for k, v in os.environ.items() if k != "A4CO_DATABASE_URL"}
    wide = {"COLUMNS": "300"}  # a URL is not broken over lines
    return await run_a4co("check", env={**environ, **wide, **env, "A4CO_DATA_DIR": str(tmp_path)})


async def test_check_without_a_database_says_where_to_point_it(tmp_path: object) -> None:
    code, text = await run_check(tmp_path)
    assert code == 2, text
    assert "no database" in text
    assert "Traceback" not in text
    port = closed_port()
    code, text = await run_check(
        tmp_path, A4CO_DATABASE_URL=f"postgresql://a4co:s3cret@127.0.0.1:{port}/a4co"
    )
    assert code == 2, text
    said = " ".join(text.split())
    assert f"cannot reach PostgreSQL at postgresql://a4co:***@127.0.0.1:{port}/a4co (" in said, said
    assert "point --database-url or A4CO_DATABASE_URL at a running server" in said, said
    assert "s3cret" not in text
    assert "Traceback" not in text
    # make run's socket, once it has stopped: the URL says where it was looked for
    gone = f"postgresql://postgres@/a4co?host={tmp_path}/postgres&port=5432"
    code, text = await run_check(tmp_path, A4CO_DATABASE_URL=gone)
    assert code == 2, text
    assert f"cannot reach PostgreSQL at {gone} (" in text, text
    assert "Traceback" not in text


async def test_check_of_a_database_that_stops_answering_says_so(urls: ServerUrls, tmp_path: Path) -> None:
    """A PostgreSQL that stalls once the check has connected (its processes stopped, its packets
    dropped): the check gives up after --timeout and says so, rather than waiting for ever."""
    async with StallingProxy(postgres_port(urls.database_url), stall_on=b"BEGIN").running() as proxy:
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/a4co"
        code, text = await run_a4co(
            "check", "--timeout", "0.5", "--database-url", url,
            env={**os.environ, "A4CO_DATA_DIR": str(tmp_path)},
        )  # fmt: skip
    assert not proxy.flowing.is_set(), "the check connected, then the server stalled"
    assert code == 2, text
    said = " ".join(text.split())
    assert f"PostgreSQL at {url} stopped answering the check (no answer within 0.5 s)" in said, said
    assert "Traceback" not in text


async def test_check_refused_by_the_database_says_so(urls: ServerUrls, tmp_path: object) -> None:
    """A PostgreSQL that answers but refuses the user: said with the URL, not a traceback."""
    parts = urlsplit(urls.database_url)
    stranger = urlunsplit(parts._replace(netloc=f"nadie@{parts.netloc.rpartition('@')[2]}"))
    code, text = await run_check(tmp_path, A4CO_DATABASE_URL=stranger)
    assert code == 2, text
    assert f"PostgreSQL at {stranger} refused the check: " in text, text
    assert '"nadie"' in text, text
    assert "Traceback" not in text


async def test_check_of_a_deployment_without_its_schemas_names_them(
    urls: ServerUrls, prefix: str, tmp_path: object
) -> None:
    """A database that answers but holds no deployment of that prefix: not a bare SQL error."""
    code, text = await run_check(tmp_path, A4CO_DATABASE_URL=urls.database_url, A4CO_PREFIX=prefix)
    assert code == 2, text
    assert f"the database has no schema {prefix}_orders: is the deployment running" in " ".join(text.split())
    assert "Traceback" not in text


async def test_a_wrong_tls_setting_is_named(tmp_path: object) -> None:
    env = dict(os.environ, A4CO_TLS_CLIENT_AUTH="maybe", A4CO_DATA_DIR=str(tmp_path))
    code, text = await run_a4co("status", env=env)
    assert code == 2, text
    assert "A4CO_TLS_CLIENT_AUTH='maybe': 1 or 0" in text
    assert "Traceback" not in text


@pytest.fixture
async def nats_without_jetstream() -> AsyncIterator[str]:
    """A real nats-server started without JetStream: its URL."""
    url = f"nats://127.0.0.1:{free_port()}"
    proc = await asyncio.create_subprocess_exec(
        str(_bin_dir() / "nats-server"), "-a", "127.0.0.1", "-p", url.rsplit(":", 1)[1],
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip

    async def accepts() -> bool:
        try:
            await (await nats.connect(url, connect_timeout=1, allow_reconnect=False)).close()
        except Exception:
            return False
        return True

    try:
        await eventually(accepts, what="nats-server accepting connections")
        yield url
    finally:
        proc.terminate()
        await communicate(proc, 10)


@pytest.mark.parametrize("command", STREAM_COMMANDS)
async def test_a_nats_without_jetstream_is_said(
    command: list[str], nats_without_jetstream: str, tmp_path: object
) -> None:
    code, text = await run_a4co(
        *command, env=dict(os.environ, A4CO_NATS_URL=nats_without_jetstream, A4CO_DATA_DIR=str(tmp_path))
    )
    assert code == 2, text
    assert f"NATS at {nats_without_jetstream} has no JetStream to answer" in text
    assert "Traceback" not in text


async def test_a_jetstream_that_does_not_answer_in_time_is_said(
    nats_without_jetstream: str, tmp_path: object
) -> None:
    """Its API requests are taken (here by a client that never answers, as a JetStream too busy
    or without a leader would leave them) but not answered before nats-py's deadline."""
    silent = await nats.connect(nats_without_jetstream)
    taken: list[str] = []

    async def take(msg: Msg) -> None:
        taken.append(msg.subject)

    await silent.subscribe("$JS.API.>", cb=take)
    await silent.flush()
    try:
        code, text = await run_a4co(
            "dlq",
            "list",
            env=dict(os.environ, A4CO_NATS_URL=nats_without_jetstream, A4CO_DATA_DIR=str(tmp_path)),
        )
    finally:
        await silent.close()
    assert code == 2, text
    assert f"NATS at {nats_without_jetstream} did not answer in time" in text
    assert "Traceback" not in text
    assert taken, "the command asked JetStream"
