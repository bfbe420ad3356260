"""`a4co status` as a script or a probe uses it: exit 0 while every service serves, 1 naming the
ones that do not."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from services.inventory.__main__ import build as build_inventory
from services.platform.local_servers import ServerUrls, free_port
from tests.integration.events.rig import Rig
from tests.integration.services.harness import Keys, running_service, settings_for
from tests.support.cli import run_a4co


async def status(
    data_dir: Path,
    urls: ServerUrls,
    prefix: str,
    services: dict[str, str],
    *,
    as_json: bool = True,
    database_url: str = "",
) -> tuple[int, str]:
    """`a4co status [--json]` over a deployment whose `addresses.json` lists `services`, and the
    database `make run` started when `database_url` names one."""
    data_dir.mkdir(exist_ok=True)
    listed = {name: {"grpc": address} for name, address in services.items()}
    servers = {"A4CO_DATABASE_URL": database_url} if database_url else {}
    (data_dir / "addresses.json").write_text(json.dumps({"services": listed, "servers": servers}))
    env = dict(os.environ, A4CO_DATA_DIR=str(data_dir), A4CO_NATS_URL=urls.nats_url, A4CO_PREFIX=prefix)
    env.pop("A4CO_DATABASE_URL", None)
    return await run_a4co("status", *(["--json"] if as_json else []), env=env)


async def test_status_exits_1_naming_a_service_that_does_not_serve(
    urls: ServerUrls, prefix: str, keys: Keys, tmp_path: Path
) -> None:
    settings = settings_for("inventory", urls, prefix, keys)
    async with running_service(
        "inventory", build_inventory, Path("services/inventory/schema.sql"), settings
    ) as inventory:
        code, out = await status(tmp_path / "data", urls, prefix, {"inventory": inventory.address})
        assert code == 0, out
        assert json.loads(out)["services"] == {"inventory": "SERVING"}

        geo = f"127.0.0.1:{free_port()}"  # nothing listens there
        code, out = await status(
            tmp_path / "data", urls, prefix, {"inventory": inventory.address, "geo": geo}
        )
    assert code == 1, out
    said = [line for line in out.splitlines() if line.startswith("not serving: ")]
    assert said == ["not serving: geo"], out
    document = "\n".join(line for line in out.splitlines() if line not in said)
    assert json.loads(document)["services"] == {"inventory": "SERVING", "geo": "UNREACHABLE"}


async def test_a_deployment_of_which_nothing_is_there_is_said(
    urls: ServerUrls, prefix: str, tmp_path: Path
) -> None:
    """No service known (no addresses.json lists one) and none of the prefix's streams: not empty
    tables and "dead letters: 0", which would pass for a healthy deployment."""
    for args in ((), ("--json",)):
        env = dict(os.environ, A4CO_DATA_DIR=str(tmp_path), A4CO_NATS_URL=urls.nats_url, A4CO_PREFIX=prefix)
        code, out = await run_a4co("status", *args, env=env)
        assert code == 2, out
        assert "no service of the deployment is known here" in out, out
        assert f"NATS at {urls.nats_url} holds none of its" in out, out


async def test_a_deployment_make_run_did_not_start_shows_its_streams(
    rig: Rig, urls: ServerUrls, prefix: str, tmp_path: Path
) -> None:
    """Its streams on NATS, its services elsewhere (compose, say): what NATS knows, and where the
    services' addresses would come from."""
    env = dict(os.environ, A4CO_DATA_DIR=str(tmp_path), A4CO_NATS_URL=urls.nats_url, A4CO_PREFIX=prefix)
    code, out = await run_a4co("status", env=env)
    assert code == 0, out
    assert out.startswith("services: not known here (make run writes their addresses in"), out
    assert "ORDERS 0" in out
    code, out = await run_a4co("status", "--json", env=env)
    assert code == 0, out
    assert json.loads(out)["services"] == {}


async def test_a_database_that_does_not_answer_is_said_and_fails_the_status(
    urls: ServerUrls, prefix: str, keys: Keys, tmp_path: Path
) -> None:
    """The outbox backlog from the deployment's PostgreSQL; when it cannot be reached, or accepts
    and never answers (stalled: when an operator asks for the status), the rest is reported, the
    backlog said unknown with why, and the status is 1, instead of a traceback."""
    settings = settings_for("inventory", urls, prefix, keys)
    async with running_service(
        "inventory", build_inventory, Path("services/inventory/schema.sql"), settings
    ) as inventory:
        services = {"inventory": inventory.address}
        code, out = await status(tmp_path / "data", urls, prefix, services, database_url=urls.database_url)
        assert code == 0, out
        assert json.loads(out)["outbox"] == {"inventory": 0}

        port = free_port()  # nothing listens there
        refused = f"postgresql://a4co:s3cret@127.0.0.1:{port}/a4co"
        code, out = await status(tmp_path / "data", urls, prefix, services, database_url=refused)
        assert code == 1, out
        assert "s3cret" not in out
        said = f"PostgreSQL at postgresql://a4co:***@127.0.0.1:{port}/a4co: "
        assert f"database not answering: {said}" in out, out

        async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # reads the client's start-up message, and never answers

        server = await asyncio.start_server(stall, "127.0.0.1", 0)
        stalled = f"postgresql://a4co@127.0.0.1:{server.sockets[0].getsockname()[1]}/a4co"
        async with server:
            code, out = await status(tmp_path / "data", urls, prefix, services, database_url=stalled)
    assert code == 1, out
    document = json.loads(out[out.index("{") : out.rindex("}") + 1])
    assert document["services"] == {"inventory": "SERVING"}, "the rest is reported"
    assert document["outbox"] == {}
    assert document["database_unanswered"] == f"PostgreSQL at {stalled}: no answer within 3 s"


async def test_services_known_without_nats_are_reported_and_fail_the_status(
    urls: ServerUrls, prefix: str, keys: Keys, tmp_path: Path
) -> None:
    """NATS unreachable while the services are known (an outage, which is when an operator asks):
    their health, and that the streams are unknown and why, status 1; not only a usage error."""
    settings = settings_for("inventory", urls, prefix, keys)
    async with running_service(
        "inventory", build_inventory, Path("services/inventory/schema.sql"), settings
    ) as inventory:
        gone = ServerUrls(f"nats://127.0.0.1:{free_port()}", urls.database_url, urls.redis_url)
        services = {"inventory": inventory.address}
        for as_json in (True, False):
            code, out = await status(tmp_path / "data", gone, prefix, services, as_json=as_json)
            assert code == 1, out
            assert f"NATS not answering: cannot reach NATS at {gone.nats_url} (" in out, out
            if as_json:
                document = json.loads(out[out.index("{") : out.rindex("}") + 1])
                assert document["services"] == {"inventory": "SERVING"}
                assert document["nats_unanswered"].startswith(f"cannot reach NATS at {gone.nats_url} (")
            else:
                assert "│ inventory │ SERVING" in out, out
                said = "streams, consumers and dead letters unknown: cannot reach NATS"
                assert said in " ".join(out.split()), out
                assert "dead letters: 0" not in out
