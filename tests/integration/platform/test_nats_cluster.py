"""Past one machine (decision 64): the services on a JetStream cluster of three real nats-servers,
named by a URL list; their streams kept on all three; events committed while the server leading
their stream is killed (SIGKILL) each handled once; and a cluster that has lost its majority,
whose connection stays up while nothing can be stored, reported as NATS being down."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.js.api import StreamInfo

from a4co.events.v1 import envelope_pb2
from a4co.orders.events.v1 import order_events_pb2
from services.cli.status import Status, streams_and_consumers
from services.platform.events.connection import connect
from services.platform.events.registry import EventRegistry
from services.platform.events.streams import ensure_streams
from services.platform.events.topology import Topology
from services.platform.grpc.tls import PLAINTEXT
from services.platform.local_servers import NatsCluster, NatsClusterNode, ServerUrls, free_port
from services.platform.main import EXIT_CONFIG
from services.platform.runtime import Infrastructure
from services.platform.settings import StreamSettings
from tests.integration.events.rig import make_rig, order_created, record_effect, running
from tests.integration.services.harness import Keys, settings_for
from tests.support.cli import run_a4co
from tests.support.node import node, run_node
from tests.support.processes import communicate, log_lines, service_process
from tests.support.waiting import eventually

THREE = StreamSettings(replicas=3)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """Three nats-servers in one cluster, each test's streams under its own prefix."""
    nodes = NatsCluster(Path(tmp_path_factory.mktemp("nats-cluster")), 3)
    nodes.start()
    yield nodes
    nodes.stop()


@pytest_asyncio.fixture
async def cluster_nc(cluster: NatsCluster) -> AsyncIterator[NATS]:
    """A client of the cluster as the services connect, to every server of the list."""
    nc = await connect(cluster.url, PLAINTEXT, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    yield nc
    await nc.close()


def kill(node: NatsClusterNode) -> None:
    """The server dies as a machine does: SIGKILL, nothing flushed, nobody told."""
    assert node.pid is not None
    os.kill(node.pid, signal.SIGKILL)
    node.stop()  # reaps it


def replicated(info: StreamInfo) -> bool:
    """Whether the stream has a leader and two followers, both caught up."""
    cluster = info.cluster
    replicas = (cluster.replicas or []) if cluster else []
    return bool(cluster and cluster.leader) and len(replicas) == 2 and all(r.current for r in replicas)


async def test_a_service_given_the_cluster_keeps_each_stream_on_three_servers(
    cluster: NatsCluster, urls: ServerUrls, prefix: str, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    """A service's A4CO_NATS_URL names the three servers after one that is not there; it starts,
    and every stream it uses (those it publishes to and consumes) is kept by a leader and two
    followers. A service starting again leaves the streams as they are: no update goes to the
    cluster's meta leader."""
    nowhere = f"nats://127.0.0.1:{free_port()}"
    settings = dataclasses.replace(
        settings_for("inventory", urls, prefix, keys), nats_url=f"{nowhere},{cluster.url}", streams=THREE
    )
    infra = await Infrastructure.connect(settings)
    try:
        await infra.use_streams(["ORDERS", "ARTISANS"])  # what inventory consumes
        names = [infra.topology.stream(s) for s in infra.streams]
        assert len(names) == 4, names
        for name in names:
            info = await infra.js.stream_info(name)
            assert info.config.num_replicas == 3, name

        async def all_replicated() -> bool:
            return all([replicated(await infra.js.stream_info(name)) for name in names])

        await eventually(all_replicated, timeout=30, interval=0.2, what="every stream on three servers")
        with caplog.at_level(logging.INFO, logger="services.platform.events.streams"):
            await infra.ensure_streams()
        assert [r.message for r in caplog.records if "stream" in r.message] == []
    finally:
        await infra.close()


async def test_streams_made_on_one_server_are_given_three_when_the_setting_says_so(
    cluster_nc: NATS, registry: EventRegistry, topology: Topology, caplog: pytest.LogCaptureFixture
) -> None:
    """A deployment that grows from A4CO_STREAM_REPLICAS=1 to 3 keeps its streams and their events."""
    js = cluster_nc.jetstream()
    await ensure_streams(js, registry, topology, StreamSettings(replicas=1))
    orders = topology.stream("ORDERS")
    await js.publish(topology.subject("a4co.orders.order.created"), b"kept", stream=orders)
    assert (await js.stream_info(orders)).config.num_replicas == 1
    with caplog.at_level(logging.INFO, logger="services.platform.events.streams"):
        await ensure_streams(js, registry, topology, THREE)
    info = await js.stream_info(orders)
    assert (info.config.num_replicas, info.state.messages) == (3, 1)
    assert f"updated stream {orders}: num_replicas" in caplog.text


async def test_events_committed_while_their_streams_leader_is_killed_are_each_handled_once(
    cluster: NatsCluster, cluster_nc: NATS, urls: ServerUrls, registry: EventRegistry, topology: Topology
) -> None:
    """An outbox relay and a consumer on the cluster: 150 events committed, then the server
    leading ORDERS killed, then 150 more. Another server takes the lead; every event is
    published and handled once, and the outbox is left empty."""
    rig = await make_rig(urls.database_url, cluster_nc, registry, topology)
    await ensure_streams(rig.js, registry, topology, THREE)
    stream = topology.stream("ORDERS")
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()})
    effects = await rig.consumer_pool("payments")

    async def handled(at_least: int) -> bool:
        return int(await effects.fetchval("SELECT count(DISTINCT event_id) FROM effects")) >= at_least

    async def on_three_servers() -> bool:
        return replicated(await rig.js.stream_info(stream))

    try:
        async with running(rig.relay()):
            await eventually(on_three_servers, timeout=30, what="ORDERS on three servers")
            for i in range(150):
                await rig.commit(order_created(f"o-{i}"), f"o-{i}")
            await eventually(lambda: handled(1), timeout=30, what="the first events handled")
            leader = (await rig.js.stream_info(stream)).cluster
            assert leader is not None
            assert leader.leader
            killed = cluster.node(leader.leader)
            kill(killed)
            for i in range(150, 300):
                await rig.commit(order_created(f"o-{i}"), f"o-{i}")
            await eventually(lambda: handled(300), timeout=90, interval=0.2, what="300 events handled")
            new = (await rig.js.stream_info(stream)).cluster
            assert new is not None
            assert new.leader not in ("", killed.server_name)

            # `a4co status` shows the new leader, and the killed server as not current.
            async def shown_lost() -> bool:
                status = Status()
                await streams_and_consumers(rig.js, topology, status)
                kept = status.stream_servers.get("ORDERS", {})
                shown[:] = [kept]
                return kept.get("followers", {}).get(killed.server_name) in ("offline", "behind")

            shown: list[dict[str, Any]] = []
            await eventually(shown_lost, timeout=30, interval=0.2, what="the killed server shown not current")
            assert shown[0]["leader"] == new.leader, shown
        assert await effects.fetchval("SELECT count(*) FROM effects") == 300, "each handled once"
        assert await rig.outbox_rows() == 0
        assert consumer.running
    finally:
        cluster.start()  # the killed server back, and the cluster whole again
        await rig.close()


async def test_a_cluster_that_lost_its_majority_is_reported_down_until_it_is_back(
    cluster: NatsCluster, urls: ServerUrls, prefix: str, keys: Keys, tmp_path: Path
) -> None:
    """Two of the three servers killed: the service stays connected to the third, but JetStream
    cannot store anything, and the health check says NATS is down (which also holds orders'
    timeout sweep); `a4co status` names the streams JetStream does not answer for. Once they are
    back, NATS is up."""
    settings = dataclasses.replace(
        settings_for("inventory", urls, prefix, keys), nats_url=cluster.url, streams=THREE
    )
    infra = await Infrastructure.connect(settings)
    nats_up = infra.checks()["nats"]

    async def up() -> bool:
        try:
            return await nats_up()
        except Exception:  # as the health monitor counts it
            return False

    async def down() -> bool:
        return not await up()

    try:
        assert await up()
        assert infra.jetstream_answers
        assert infra.nc.connected_url is not None
        port = infra.nc.connected_url.port
        killed = [node for node in cluster.nodes if node.port != port]
        assert len(killed) == 2
        for node in killed:
            kill(node)
        await eventually(down, timeout=30, interval=0.2, what="NATS reported down")
        assert not infra.jetstream_answers
        assert infra.nc.is_connected, "the connection to the server left stays up"
        # The operator's view: the streams JetStream cannot answer for, instead of a traceback.
        env = {
            **os.environ,
            "A4CO_NATS_URL": cluster.url,
            "A4CO_PREFIX": prefix,
            "A4CO_DATA_DIR": str(tmp_path),
        }
        code, out = await run_a4co("status", "--json", env=env)
        assert code == 0, out
        assert "ORDERS" in json.loads(out)["streams_unanswered"], out
        cluster.start()
        await eventually(up, timeout=60, interval=0.2, what="NATS reported up again")
        assert infra.jetstream_answers
    finally:
        cluster.start()  # whole again for the next test, however this one ended
        await infra.close()


async def test_a_service_given_a_nats_url_it_cannot_use_stops_saying_why(
    urls: ServerUrls, prefix: str, keys: Keys, tmp_path: Path
) -> None:
    """A list with a server that is not NATS's: exit EX_CONFIG (78) and one line naming the
    variable and the server, nothing retried."""
    env = {
        **os.environ,
        **urls.as_env(),
        "A4CO_NATS_URL": "nats://127.0.0.1:4222,http://127.0.0.1:8222",
        "A4CO_PREFIX": prefix,
        "A4CO_JWT_PUBLIC_KEY_FILE": str(keys.public_file),
    }
    ready = tmp_path / "inventory.ready.json"
    async with service_process("inventory", env, ready) as proc:
        _, stderr = await communicate(proc, 60)
    assert proc.returncode == EXIT_CONFIG
    assert [line["message"] for line in log_lines(stderr)] == [
        "A4CO_NATS_URL='nats://127.0.0.1:4222,http://127.0.0.1:8222': 'http://127.0.0.1:8222': the scheme"
        " must be one of nats, tls, ws, wss"
    ]
    assert not ready.exists()


async def test_the_node_events_reader_takes_the_clusters_url_list(
    cluster: NatsCluster, cluster_nc: NATS, registry: EventRegistry, topology: Topology, prefix: str
) -> None:
    """clients/node/events.mjs given the same A4CO_NATS_URL as the services, a server that is not
    there among the cluster's, reads an event published on the cluster."""
    node()
    js = cluster_nc.jetstream()
    await ensure_streams(js, registry, topology, THREE)
    envelope = envelope_pb2.EventEnvelope(event_id="e-1", event_type="a4co.orders.OrderCreated")
    envelope.payload.Pack(order_events_pb2.OrderCreated(order_id="o-1"))
    await js.publish(topology.subject("a4co.orders.order.created"), envelope.SerializeToString())
    url = f"{cluster.url},nats://127.0.0.1:{free_port()}"  # (as one URL nats.js would read the last)

    code, out, err = await run_node(
        "events.mjs", "--stream", "ORDERS", env={"A4CO_NATS_URL": url, "A4CO_PREFIX": prefix}
    )
    assert code == 0, err
    event = json.loads(out)
    assert (event["event_id"], event["payload"]) == ("e-1", {"order_id": "o-1"}), out
