"""NATS that wants credentials (decision 67): a service and the `a4co` command connect with a
credentials file (operator mode), an nkey seed, or a user and password in the URL; without them,
or with ones NATS refuses, they stop at once saying what to set, with no password in what they
say; and a renewed credentials file is what the next reconnection presents."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nkeys  # type: ignore[import-untyped]
import pytest
from nats.aio.client import Client as NATS

from a4co.events.v1 import envelope_pb2
from a4co.orders.events.v1 import order_events_pb2
from services.platform.events.connection import NatsAuthError, connect
from services.platform.events.credentials import NatsCredentials
from services.platform.grpc.tls import PLAINTEXT
from services.platform.local_servers import ServerUrls
from services.platform.main import EXIT_CONFIG
from tests.integration.services.harness import Keys
from tests.support.cli import run_a4co
from tests.support.nats_accounts import ConfiguredNats, Operator, new_key, public, service_env
from tests.support.node import node, run_node
from tests.support.processes import communicate, log_lines, service_process
from tests.support.waiting import eventually

PASSWORD = "s3cret-of-inventory"
LOGGER = "services.platform.events.connection"


@pytest.fixture
def operator() -> Operator:
    return Operator()


@pytest.fixture
def operator_nats(tmp_path: Path, operator: Operator) -> Iterator[ConfiguredNats]:
    """NATS in operator mode: only users of the operator's account connect."""
    server = ConfiguredNats(tmp_path / "nats" / "data", operator.config())
    server.start()
    yield server
    server.stop()


PASSWORD_CONFIG = f'authorization {{ user: inventory, password: "{PASSWORD}" }}\n'


@pytest.fixture
def password_nats(tmp_path: Path) -> Iterator[ConfiguredNats]:
    """NATS that takes the user inventory with PASSWORD."""
    server = ConfiguredNats(tmp_path / "password-nats" / "data", PASSWORD_CONFIG)
    server.start()
    yield server
    server.stop()


def connections(server: ConfiguredNats) -> list[dict[str, Any]]:
    """The server's view of its client connections, with what they authenticated as."""
    url = f"http://127.0.0.1:{server.monitor_port}/connz?auth=1"
    with urllib.request.urlopen(url, timeout=5) as response:
        return list(json.load(response).get("connections") or [])


async def test_a_service_and_the_command_line_connect_with_a_credentials_file(
    urls: ServerUrls,
    prefix: str,
    keys: Keys,
    operator: Operator,
    operator_nats: ConfiguredNats,
    tmp_path: Path,
) -> None:
    """inventory (its own process) starts on NATS in operator mode as the user of its credentials
    file, its streams made there; `a4co dlq stats` reads them with the same variable."""
    creds = tmp_path / "inventory.creds"
    user = operator.user_creds(creds, "inventory")
    env = service_env(urls, prefix, keys, operator_nats.url, A4CO_NATS_CREDS_FILE=str(creds))
    ready = tmp_path / "inventory.ready.json"
    async with service_process("inventory", env, ready, stderr=asyncio.subprocess.DEVNULL) as proc:
        await eventually(lambda: ready.exists() or proc.returncode is not None, timeout=60, what="ready")
        assert ready.exists(), f"inventory exited with {proc.returncode}"
        [connection] = [
            c for c in await asyncio.to_thread(connections, operator_nats) if c.get("name") == "inventory"
        ]
        assert connection["authorized_user"] == user
        assert connection["account"] == public(operator.account)

        code, out = await run_a4co("dlq", "stats", env=env)
        assert code == 0, out


async def test_a_service_without_credentials_stops_saying_what_to_set(
    urls: ServerUrls, prefix: str, keys: Keys, operator_nats: ConfiguredNats, tmp_path: Path
) -> None:
    """Not tried again for ever, as nats-py would: EX_CONFIG (78) and one line, from the service and
    (exit 2) from the command line."""
    env = service_env(urls, prefix, keys, operator_nats.url)
    ready = tmp_path / "inventory.ready.json"
    async with service_process("inventory", env, ready) as proc:
        _, stderr = await communicate(proc, 60)
    assert proc.returncode == EXIT_CONFIG
    said = [line["message"] for line in log_lines(stderr) if line["level"] == "error"]
    assert said == [
        f"NATS at {operator_nats.url} refused this connection (nats: 'Authorization Violation'): this"
        " NATS requires credentials: set A4CO_NATS_CREDS_FILE, A4CO_NATS_NKEY_FILE, or a user and"
        " password in A4CO_NATS_URL"
    ], said
    assert not ready.exists()

    code, out = await run_a4co("dlq", "stats", env=env)
    assert code == 2, out
    assert "this NATS requires credentials" in " ".join(out.split()), out


async def test_credentials_of_another_operator_or_expired_are_refused_naming_the_file(
    operator: Operator, operator_nats: ConfiguredNats, tmp_path: Path
) -> None:
    """NATS's answer is the same "Authorization Violation" for both; the line names the file."""
    stranger, expired = tmp_path / "stranger.creds", tmp_path / "expired.creds"
    Operator().user_creds(stranger, "stranger")
    operator.user_creds(expired, "late", expires=1_000_000_000)  # 2001
    for creds in (stranger, expired):
        with pytest.raises(
            NatsAuthError, match="A4CO_NATS_CREDS_FILE must hold a user of an account NATS trusts"
        ):
            await connect(
                operator_nats.url,
                PLAINTEXT,
                NatsCredentials(creds_file=str(creds)),
                max_reconnect_attempts=-1,
            )


async def test_a_renewed_credentials_file_is_presented_at_the_next_reconnection(
    operator: Operator, operator_nats: ConfiguredNats, tmp_path: Path
) -> None:
    creds = tmp_path / "inventory.creds"
    first = operator.user_creds(creds, "inventory")
    nc = await connect(
        operator_nats.url,
        PLAINTEXT,
        NatsCredentials(creds_file=str(creds)),
        name="inventory",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.1,
    )
    try:
        assert [c["authorized_user"] for c in await asyncio.to_thread(connections, operator_nats)] == [first]
        renewed_user = operator.user_creds(creds, "inventory-renewed")  # written in place, as renewed
        await asyncio.to_thread(operator_nats.stop)
        await asyncio.to_thread(operator_nats.start)

        async def renewed() -> bool:
            found = await asyncio.to_thread(connections, operator_nats)
            return [c["authorized_user"] for c in found] == [renewed_user]

        await eventually(renewed, timeout=30, interval=0.1, what="reconnected as the renewed user")
    finally:
        await nc.close()


async def test_an_nkey_seed_file_connects_to_a_server_naming_its_public_key(tmp_path: Path) -> None:
    user = new_key(nkeys.PREFIX_BYTE_USER)
    seed = tmp_path / "inventory.nk"
    seed.write_bytes(user.seed)
    server = ConfiguredNats(
        tmp_path / "nats" / "data", f"authorization {{ users = [ {{ nkey: {public(user)} }} ] }}\n"
    )
    await asyncio.to_thread(server.start)
    try:
        nc = await connect(server.url, PLAINTEXT, NatsCredentials(nkey_file=str(seed)), name="inventory")
        try:
            await nc.jetstream().account_info()
        finally:
            await nc.close()
        other = tmp_path / "other.nk"
        other.write_bytes(new_key(nkeys.PREFIX_BYTE_USER).seed)
        with pytest.raises(NatsAuthError, match="A4CO_NATS_NKEY_FILE must hold the seed of a user"):
            await connect(server.url, PLAINTEXT, NatsCredentials(nkey_file=str(other)))
    finally:
        await asyncio.to_thread(server.stop)


async def test_a_user_and_password_in_the_url_connect_and_are_never_said(
    password_nats: ConfiguredNats, caplog: pytest.LogCaptureFixture
) -> None:
    """The password is in the URL, as NATS's clients take it; what the process says of the server
    (refused, lost, back) has `***` instead."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    server = password_nats
    host = f"127.0.0.1:{server.port}"
    nc = await connect(
        f"nats://inventory:{PASSWORD}@{host}", PLAINTEXT, max_reconnect_attempts=-1, reconnect_time_wait=0.1
    )
    try:
        await nc.jetstream().account_info()
        await asyncio.to_thread(server.stop)
        await eventually(lambda: not nc.is_connected, what="lost")
        await asyncio.to_thread(server.start)
        await eventually(
            lambda: any(r.getMessage().startswith("reconnected") for r in caplog.records), what="reconnected"
        )
    finally:
        await nc.close()
    with pytest.raises(NatsAuthError) as refused:
        await connect(f"nats://inventory:wrong-{PASSWORD}@{host}", PLAINTEXT)
    assert str(refused.value).startswith(f"NATS at nats://inventory:***@{host} refused this connection")
    assert "the user and password (or token) in A4CO_NATS_URL" in str(refused.value)
    said = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any(f"nats://inventory:***@{host}" in m for m in said), said  # lost and back
    assert not [m for m in [*said, str(refused.value)] if PASSWORD in m]


async def _one_event(nc: NATS, prefix: str) -> None:
    """An OrderCreated in the prefix's ORDERS stream."""
    try:
        js = nc.jetstream()
        await js.add_stream(name=f"{prefix}_ORDERS", subjects=[f"{prefix}.a4co.orders.>"])
        envelope = envelope_pb2.EventEnvelope(event_id="e-1", event_type="a4co.orders.OrderCreated")
        envelope.payload.Pack(order_events_pb2.OrderCreated(order_id="o-1"))
        await js.publish(f"{prefix}.a4co.orders.order.created", envelope.SerializeToString())
    finally:
        await nc.close()


async def test_the_node_events_reader_takes_the_same_credentials(
    prefix: str, operator: Operator, operator_nats: ConfiguredNats, tmp_path: Path
) -> None:
    """clients/node/events.mjs (nats.js) with A4CO_NATS_CREDS_FILE, and with a user and password in
    the URL, which nats.js does not read from it; a refusal said without the password."""
    node()
    creds = tmp_path / "reader.creds"
    operator.user_creds(creds, "reader")
    await _one_event(
        await connect(operator_nats.url, PLAINTEXT, NatsCredentials(creds_file=str(creds))), prefix
    )
    env = {"A4CO_NATS_URL": operator_nats.url, "A4CO_PREFIX": prefix, "A4CO_NATS_CREDS_FILE": str(creds)}
    code, out, err = await run_node("events.mjs", "--stream", "ORDERS", env=env)
    assert code == 0, err
    assert json.loads(out)["payload"] == {"order_id": "o-1"}, out

    code, out, err = await run_node("events.mjs", env={**env, "A4CO_NATS_CREDS_FILE": ""})
    assert (code, out) == (1, ""), err
    assert "Authorization Violation" in err, err

    server = ConfiguredNats(
        tmp_path / "userpass" / "data", f'authorization {{ user: reader, password: "{PASSWORD}" }}\n'
    )
    await asyncio.to_thread(server.start)
    try:
        host = f"127.0.0.1:{server.port}"
        await _one_event(await connect(f"nats://reader:{PASSWORD}@{host}", PLAINTEXT), prefix)
        env = {"A4CO_NATS_URL": f"nats://reader:{PASSWORD}@{host}", "A4CO_PREFIX": prefix}
        code, out, err = await run_node("events.mjs", env=env)
        assert code == 0, err
        assert json.loads(out)["event_id"] == "e-1", out

        code, out, err = await run_node(
            "events.mjs", env={"A4CO_NATS_URL": f"nats://reader:no-{PASSWORD}@{host}"}
        )
        assert (code, out) == (1, ""), err
        assert err.rstrip().endswith(f"(NATS at nats://reader:***@{host})"), err
        assert PASSWORD not in err
    finally:
        await asyncio.to_thread(server.stop)


async def test_credentials_refused_on_a_reconnection_are_said_at_once_and_tried_until_taken(
    password_nats: ConfiguredNats, caplog: pytest.LogCaptureFixture
) -> None:
    """NATS reloaded with another password closes the connection and refuses it back: the process
    says it lost the connection, then at ERROR that NATS refuses it, and tries again; reloaded with
    the password again, it reconnects."""
    caplog.set_level(logging.INFO, logger=LOGGER)

    def said() -> list[tuple[str, str]]:
        return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == LOGGER]

    server = password_nats
    url = f"nats://inventory:{PASSWORD}@127.0.0.1:{server.port}"
    nc = await connect(url, PLAINTEXT, name="inventory", max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        server.reconfigure('authorization { user: inventory, password: "another" }\n')
        await eventually(lambda: any(level == "ERROR" for level, _ in said()), what="the refusal said")
        assert not nc.is_connected
        server.reconfigure(PASSWORD_CONFIG)
        await eventually(lambda: len(said()) == 3, what="the reconnection said")
        assert nc.is_connected
    finally:
        await nc.close()
    shown = url.replace(PASSWORD, "***")
    (lost_level, lost), refused, (back_level, back) = said()
    assert lost_level == "WARNING"
    assert lost.startswith(f"lost the connection to NATS at {shown}"), lost
    assert refused == (
        "ERROR",
        f"NATS at {shown} refuses this connection (nats: 'Authorization Violation'); trying again"
        " until it accepts it",
    )
    assert back_level == "INFO"
    assert back.startswith(f"reconnected to NATS at {shown} after "), back
