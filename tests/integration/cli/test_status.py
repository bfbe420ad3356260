"""`a4co status` as a script or a probe uses it: exit 0 while every service serves, 1 naming the
ones that do not."""

from __future__ import annotations

import json
import os
from pathlib import Path

from services.inventory.__main__ import build as build_inventory
from services.platform.local_servers import ServerUrls, free_port
from tests.integration.events.rig import Rig
from tests.integration.services.harness import Keys, running_service, settings_for
from tests.support.cli import run_a4co


async def status(data_dir: Path, urls: ServerUrls, prefix: str, services: dict[str, str]) -> tuple[int, str]:
    """`a4co status --json` over a deployment whose `addresses.json` lists `services`."""
    data_dir.mkdir(exist_ok=True)
    listed = {name: {"grpc": address} for name, address in services.items()}
    (data_dir / "addresses.json").write_text(json.dumps({"services": listed}))
    env = dict(os.environ, A4CO_DATA_DIR=str(data_dir), A4CO_NATS_URL=urls.nats_url, A4CO_PREFIX=prefix)
    env.pop("A4CO_DATABASE_URL", None)
    return await run_a4co("status", "--json", env=env)


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
