"""Each NATS user allowed only what `a4co nats-permissions` derives (decision 68), on a real
nats-server configured with them: what a service may not do is refused, said once at ERROR naming
the subject, and counted; a relay whose user may not publish keeps its events until it may; the
events reader reads with consumers of its own and cannot touch a service's; the command prints a
configuration nats-server takes and works as its own user; users issued in operator mode with the
JSON form run a service. (Every flow of the marketplace runs
within these permissions in tests/e2e/test_marketplace.py.)"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from a4co.orders.events.v1 import order_events_pb2
from services.platform.events.codec import EventCodec
from services.platform.events.connection import NatsSettingError, connect
from services.platform.events.credentials import NatsCredentials
from services.platform.events.outbox import OutboxRelay
from services.platform.events.permissions import COMMAND, JWT_CONTROL_LINE, READER
from services.platform.events.registry import EventRegistry
from services.platform.events.streams import ensure_streams
from services.platform.events.topology import Topology
from services.platform.grpc.tls import PLAINTEXT
from services.platform.local_servers import ServerUrls, _bin_dir
from services.platform.settings import StreamSettings
from tests.integration.events.rig import make_rig, order_created, running
from tests.integration.services.harness import Keys
from tests.support.cli import run_a4co
from tests.support.nats_accounts import ConfiguredNats, Operator, PermissionedNats, service_env
from tests.support.node import node, run_node
from tests.support.processes import communicate, service_process
from tests.support.waiting import eventually

LOGGER = "services.platform.events.connection"


@pytest.fixture
def permissioned(tmp_path: Path, prefix: str) -> Iterator[PermissionedNats]:
    server = PermissionedNats(tmp_path / "nats" / "data", prefix)
    server.start()
    yield server
    server.stop()


async def as_user(server: PermissionedNats, user: str, topology: Topology) -> NATS:
    """A connection as `user`, with the inboxes a service of that name has."""
    return await connect(server.url_of(user), PLAINTEXT, name=user, inbox_prefix=topology.inbox(user))


def violations(service: str) -> float:
    return REGISTRY.get_sample_value("a4co_nats_permission_violations_total", {"service": service}) or 0.0


async def json_permissions(prefix: str) -> dict[str, dict[str, dict[str, list[str]]]]:
    """What `a4co nats-permissions --format json --prefix <prefix>` prints, read."""
    here = {k: v for k, v in os.environ.items() if not k.startswith("A4CO_")}
    code, out = await run_a4co("nats-permissions", "--format", "json", "--prefix", prefix, env=here)
    assert code == 0, out
    permissions: dict[str, dict[str, dict[str, list[str]]]] = json.loads(out)
    return permissions


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]


async def test_what_a_service_may_not_do_is_refused_said_once_and_counted(
    permissioned: PermissionedNats, topology: Topology, caplog: pytest.LogCaptureFixture
) -> None:
    """payments publishing an orders event (twice), hearing orders' inbox, and pulling from
    inventory's consumer of ORDERS: NATS refuses each; the process says each subject once, at
    ERROR, counts every refusal, and keeps its connection; its own events go through."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    admin = await as_user(permissioned, COMMAND, topology)
    payments = await as_user(permissioned, "payments", topology)
    try:
        admin_js = admin.jetstream()
        orders_stream = topology.stream("ORDERS")
        await admin_js.add_stream(name=orders_stream, subjects=[topology.subject("a4co.orders.>")])
        before = violations("payments")
        orders_subject = topology.subject("a4co.orders.order.created")
        await payments.publish(orders_subject, b"forged")
        await payments.publish(orders_subject, b"forged")
        await payments.subscribe(f"{topology.inbox('orders')}.>")
        with pytest.raises(TimeoutError):  # the request never reaches JetStream
            await payments.request(
                f"$JS.API.CONSUMER.MSG.NEXT.{orders_stream}.{topology.durable('inventory', 'ORDERS')}",
                b"1",
                timeout=0.5,
            )
        await eventually(lambda: violations("payments") - before >= 4, timeout=10, what="refusals counted")
        said = errors(caplog)
        assert len(said) == 3, said
        assert f'publish to "{orders_subject.lower()}"' in said[0]
        assert "a4co nats-permissions" in said[0]
        assert f'subscription to "{topology.inbox("orders").lower()}.>"' in said[1]
        assert "consumer.msg.next" in said[2]
        assert payments.is_connected
        assert (await admin_js.stream_info(orders_stream)).state.messages == 0

        logged = permissioned.violations()
        assert any(f'Publish Violation - Subject "{orders_subject}"' in line for line in logged), logged
        assert any("Subscription Violation" in line for line in logged), logged

        await admin_js.add_stream(
            name=topology.stream("PAYMENTS"), subjects=[topology.subject("a4co.payments.>")]
        )
        ack = await payments.jetstream().publish(topology.subject("a4co.payments.payment.processed"), b"ok")
        assert ack.seq == 1
    finally:
        await payments.close()
        await admin.close()


async def test_a_relay_whose_user_may_not_publish_keeps_its_events_until_it_may(
    urls: ServerUrls, prefix: str, registry: EventRegistry, topology: Topology, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """orders' user without its own subjects: the relay's publishes are refused, said at ERROR, and
    its rows stay in the outbox; NATS reloaded with the permissions whole (SIGHUP), the same
    connection publishes them, each once."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    own = topology.subject("a4co.orders.>")
    server = PermissionedNats(tmp_path / "nats" / "data", prefix, withheld={"orders": own})
    await asyncio.to_thread(server.start)
    admin = await as_user(server, COMMAND, topology)
    orders = await as_user(server, "orders", topology)
    rig = await make_rig(urls.database_url, admin, registry, topology)
    try:
        for n in range(3):
            await rig.commit(order_created(f"o-{n}"), f"o-{n}")
        relay = OutboxRelay(
            dsn=rig.dsn, schema=rig.schema, service="orders", js=orders.jetstream(),
            poll_interval_s=0.2, ack_timeout_s=0.5,
        )  # fmt: skip
        async with running(relay):
            await eventually(
                lambda: any("permissions violation for publish to" in m for m in errors(caplog)),
                timeout=10,
                what="the refusal said",
            )
            assert await rig.outbox_rows() == 3
            stream = topology.stream("ORDERS")
            assert (await rig.js.stream_info(stream)).state.messages == 0

            await asyncio.to_thread(server.permit_all)

            async def published() -> bool:
                return await rig.outbox_rows() == 0

            await eventually(published, timeout=30, what="the outbox published once permitted")
            assert (await rig.js.stream_info(stream)).state.messages == 3
    finally:
        await rig.close()
        await orders.close()
        await admin.close()
        await asyncio.to_thread(server.stop)


async def test_the_reader_reads_with_consumers_of_its_own_and_cannot_touch_a_services(
    permissioned: PermissionedNats, prefix: str, topology: Topology, registry: EventRegistry
) -> None:
    """clients/node/events.mjs as the reader reads ORDERS; the reader makes and deletes a durable
    consumer of its own, but may neither pull from nor delete inventory's, nor hear its inbox."""
    node()
    admin = await as_user(permissioned, COMMAND, topology)
    try:
        js = admin.jetstream()
        stream = topology.stream("ORDERS")
        await js.add_stream(name=stream, subjects=[topology.subject("a4co.orders.>")])
        durable = topology.durable("inventory", "ORDERS")
        await js.add_consumer(stream, durable_name=durable)
        codec = EventCodec(registry, "orders", topology)
        outgoing = codec.encode(order_events_pb2.OrderCreated(order_id="o-1"), aggregate_id="o-1")
        await js.publish(outgoing.subject, outgoing.body, headers=outgoing.headers)
    finally:
        await admin.close()

    env = {"A4CO_NATS_URL": permissioned.url_of(READER), "A4CO_PREFIX": prefix}
    code, out, err = await run_node("events.mjs", "--stream", "ORDERS", env=env)
    assert code == 0, err
    assert json.loads(out)["payload"]["order_id"] == "o-1", out

    reader = await as_user(permissioned, READER, Topology())
    try:
        rjs = reader.jetstream()
        own = await rjs.add_consumer(stream, durable_name=f"{prefix}_team")
        assert own.name == f"{prefix}_team"
        assert await rjs.delete_consumer(stream, f"{prefix}_team")
        with pytest.raises(TimeoutError):
            await rjs.delete_consumer(stream, durable)

        # Every inbox, heard: JetStream's answer to inventory is not delivered, the reader's own is
        # (after it: a delivery to the reader in the same order as the answers were sent).
        heard: list[str] = []

        async def hear(msg: Msg) -> None:
            heard.append(msg.subject)

        await reader.subscribe("_INBOX.>", cb=hear)
        await reader.flush()
        inventory = await as_user(permissioned, "inventory", topology)
        try:
            await inventory.jetstream().account_info()  # answered on inventory's inbox
        finally:
            await inventory.close()
        await rjs.account_info()
        await eventually(lambda: bool(heard), what="the reader's own answer heard")
        assert [s for s in heard if not s.startswith(f"{Topology().inbox(READER)}.")] == [], heard
        await reader.subscribe(f"{topology.inbox('inventory')}.>")
        await reader.flush()
    finally:
        await reader.close()
    # events.mjs, the reader's own consumer and its every-inbox subscription: none refused
    deleting, hearing = permissioned.violations()
    assert f'Publish Violation - Subject "$JS.API.CONSUMER.DELETE.{stream}.{durable}"' in deleting
    assert (
        f'"$G/user:{READER}" - Subscription Violation - Subject "{topology.inbox("inventory")}.>"' in hearing
    )


async def test_the_command_prints_a_configuration_nats_takes_and_works_as_its_own_user(
    permissioned: PermissionedNats, prefix: str, tmp_path: Path, registry: EventRegistry
) -> None:
    """`a4co nats-permissions` for the prefix: a configuration nats-server's check accepts, the same
    as the server of these tests runs; `a4co dlq stats` as the user `a4co`, on the dead-letter
    stream a service of the deployment declared as its own user."""
    here = {k: v for k, v in os.environ.items() if not k.startswith("A4CO_")}
    code, out = await run_a4co("nats-permissions", "--prefix", prefix, env=here)
    assert code == 0, out
    assert out == permissioned.extra
    conf = tmp_path / "users.conf"
    conf.write_text(out)
    proc = await asyncio.create_subprocess_exec(
        str(_bin_dir() / "nats-server"), "--config", str(conf), "-t",
        env={f"A4CO_NATS_PASSWORD_{p.user.upper()}": "x" for p in permissioned.users},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    said, _ = await communicate(proc, 30)
    assert proc.returncode == 0, said.decode()

    code, out = await run_a4co("nats-permissions", "--format", "json", "--prefix", prefix, env=here)
    assert code == 0, out
    document = json.loads(out)
    assert document["orders"]["subscribe"] == {"allow": [f"_INBOX.{prefix}_orders.>"]}
    assert set(document) == {p.user for p in permissioned.users}

    topology = Topology(prefix)
    payments = await as_user(permissioned, "payments", topology)
    try:
        await ensure_streams(payments.jetstream(), registry, topology, StreamSettings(), only={"DLQ"})
    finally:
        await payments.close()
    env = {**here, "A4CO_NATS_URL": permissioned.url_of(COMMAND), "A4CO_PREFIX": prefix}
    code, out = await run_a4co("dlq", "stats", env=env)
    assert code == 0, out
    assert "error pattern" in out, out  # the table's heading
    assert permissioned.violations() == []
    # its user may do nothing on another deployment's streams: said at once, no traceback
    code, out = await run_a4co("dlq", "stats", env={**env, "A4CO_PREFIX": "another"})
    assert code == 2, out
    assert "permissions violation for publish to" in out, out
    assert "another_dlq" in out, out
    assert "Traceback" not in out
    [refused] = permissioned.violations()
    assert 'Publish Violation - Subject "$JS.API.CONSUMER.CREATE.another_DLQ.' in refused, refused


async def test_the_command_traces_an_order_as_its_own_user(
    permissioned: PermissionedNats, prefix: str, topology: Topology, registry: EventRegistry
) -> None:
    """`a4co trace` reads every stream with consumers of its own: allowed, and none left behind."""
    admin = await as_user(permissioned, COMMAND, topology)
    try:
        js = admin.jetstream()
        streams = await ensure_streams(js, registry, topology, StreamSettings())
        outgoing = EventCodec(registry, "orders", topology).encode(order_created("o-1"), aggregate_id="o-1")
        await js.publish(outgoing.subject, outgoing.body, headers=outgoing.headers)
        env = {"A4CO_NATS_URL": permissioned.url_of(COMMAND), "A4CO_PREFIX": prefix}
        code, out = await run_a4co("trace", "o-1", env=env)
        assert code == 0, out
        assert "OrderCreated from orders" in out, out
        assert permissioned.violations() == []
        assert [c.name for s in streams for c in await js.consumers_info(s)] == []
    finally:
        await admin.close()


async def test_in_operator_mode_users_issued_with_the_json_permissions_run_the_service(
    urls: ServerUrls, prefix: str, keys: Keys, tmp_path: Path
) -> None:
    """NATS in operator mode (with the control line the JWTs need), every user issued (JWTs) with
    what `a4co nats-permissions --format json` gives it, and each connects; inventory starts,
    declares its streams and consumers, and serves; the command reads the dead letters; NATS
    refuses nothing."""
    permissions = await json_permissions(prefix)
    operator = Operator()
    server = ConfiguredNats(tmp_path / "nats" / "data", operator.config(max_control_line=JWT_CONTROL_LINE))
    await asyncio.to_thread(server.start)
    try:
        creds = {user: tmp_path / f"{user}.creds" for user in permissions}
        for user, path in creds.items():
            operator.user_creds(path, user, permissions=permissions[user])
        # the reader's JWT is past nats-server's default control line (4 KB): hence the setting
        assert len(creds[READER].read_text().split("\n")[1]) > 4096
        for user, path in creds.items():
            nc = await connect(
                server.url, PLAINTEXT, NatsCredentials(creds_file=str(path)),
                name=user, inbox_prefix=Topology(prefix).inbox(user),
            )  # fmt: skip
            try:
                await nc.jetstream().account_info()
            finally:
                await nc.close()
        env = service_env(urls, prefix, keys, server.url, A4CO_NATS_CREDS_FILE=str(creds["inventory"]))
        ready = tmp_path / "inventory.ready.json"
        async with service_process("inventory", env, ready, stderr=asyncio.subprocess.DEVNULL) as proc:
            await eventually(lambda: ready.exists() or proc.returncode is not None, timeout=60, what="ready")
            assert ready.exists(), f"inventory exited with {proc.returncode}"
            command = {**env, "A4CO_NATS_CREDS_FILE": str(creds[COMMAND])}
            code, out = await run_a4co("dlq", "stats", env=command)
            assert code == 0, out
        log = server.data_dir.parent / f"{server.name}.log"
        assert "Violation" not in log.read_text()
        # and the JWT's permissions do hold: inventory's user may not publish orders' events
        nc = await connect(server.url, PLAINTEXT, NatsCredentials(creds_file=str(creds["inventory"])))
        try:
            await nc.publish(Topology(prefix).subject("a4co.orders.order.created"), b"forged")
            await nc.flush()
            await eventually(lambda: "Publish Violation" in log.read_text(), timeout=10, what="refused")
        finally:
            await nc.close()
    finally:
        await asyncio.to_thread(server.stop)


async def test_with_nkeys_each_user_holds_a_seed_of_its_own_and_no_password_is_written(
    urls: ServerUrls, prefix: str, keys: Keys, tmp_path: Path
) -> None:
    """`--nkeys DIR`: a seed per user in DIR (its owner's only), the configuration naming their
    public keys; run again, the same keys. NATS with it takes inventory with its seed as
    A4CO_NATS_NKEY_FILE, and the command with its own, and refuses nothing; a file that is not a
    seed is said, exit 2."""
    here = {k: v for k, v in os.environ.items() if not k.startswith("A4CO_")}
    seeds = tmp_path / "nats-users"
    code, conf = await run_a4co("nats-permissions", "--prefix", prefix, "--nkeys", str(seeds), env=here)
    assert code == 0, conf
    assert "password" not in conf.replace("no passwords", "")
    inventory_seed = seeds / "inventory.nk"
    assert inventory_seed.read_text().startswith("SU")
    assert inventory_seed.stat().st_mode & 0o077 == 0
    code, again = await run_a4co("nats-permissions", "--prefix", prefix, "--nkeys", str(seeds), env=here)
    assert (code, again) == (0, conf)

    server = ConfiguredNats(tmp_path / "nats" / "data", conf)
    await asyncio.to_thread(server.start)
    try:
        env = service_env(urls, prefix, keys, server.url, A4CO_NATS_NKEY_FILE=str(inventory_seed))
        ready = tmp_path / "inventory.ready.json"
        async with service_process("inventory", env, ready, stderr=asyncio.subprocess.DEVNULL) as proc:
            await eventually(lambda: ready.exists() or proc.returncode is not None, timeout=60, what="ready")
            assert ready.exists(), f"inventory exited with {proc.returncode}"
            command = {**env, "A4CO_NATS_NKEY_FILE": str(seeds / f"{COMMAND}.nk")}
            code, out = await run_a4co("dlq", "stats", env=command)
            assert code == 0, out
        assert "Violation" not in (server.data_dir.parent / f"{server.name}.log").read_text()
    finally:
        await asyncio.to_thread(server.stop)

    code, out = await run_a4co("nats-permissions", "--format", "json", "--nkeys", str(seeds), env=here)
    assert code == 2, out
    assert "--nkeys goes with --format conf" in " ".join(out.split()), out
    (seeds / "reader.nk").write_text("not a seed\n")
    code, out = await run_a4co("nats-permissions", "--nkeys", str(seeds), env=here)
    assert code == 2, out
    assert "reader.nk: not a user's nkey seed" in " ".join(out.split()), out


async def test_a_jwt_past_the_servers_control_line_is_a_setting_said_at_once(
    tmp_path: Path, prefix: str
) -> None:
    """Operator mode at nats-server's default control line (4 KB): the reader's JWT does not fit,
    and connecting says which setting to raise instead of trying again for ever."""
    permissions = await json_permissions(prefix)
    operator = Operator()
    server = ConfiguredNats(tmp_path / "nats" / "data", operator.config())
    await asyncio.to_thread(server.start)
    try:
        path = tmp_path / "reader.creds"
        operator.user_creds(path, READER, permissions=permissions[READER])
        with pytest.raises(NatsSettingError) as wrong:
            await connect(server.url, PLAINTEXT, NatsCredentials(creds_file=str(path)), name=READER)
        assert "maximum control line exceeded" in str(wrong.value).lower()
        assert f"max_control_line: {JWT_CONTROL_LINE}" in str(wrong.value)
    finally:
        await asyncio.to_thread(server.stop)
