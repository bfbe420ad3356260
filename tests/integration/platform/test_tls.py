"""TLS on a service's gRPC server and on the calls between services (decision 58): a caller that
trusts the deployment's CA gets in, plaintext and strangers do not; with mutual TLS a caller
needs a certificate of its own. grpcurl, as another team would debug it. Renewed files are used
without a restart (decision 59)."""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import os
import signal
import socket
import ssl
import urllib.request
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from a4co.inventory.v1 import inventory_service_pb2 as inventory_pb
from a4co.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from services.inventory.__main__ import build as build_inventory
from services.platform.grpc import tls
from services.platform.grpc.client import PeerClient, open_channel
from services.platform.grpc.tls import Certificates, Tls
from services.platform.local_servers import ServerUrls, wait_until
from services.platform.metrics_endpoint import serve_metrics
from services.platform.settings import Settings
from tests.integration.services.harness import Keys, RunningService, running_service, settings_for
from tests.integration.services.test_grpcurl import grpcurl
from tests.support.certificates import Authority, Pki
from tests.support.processes import log_lines, service_process
from tests.support.waiting import eventually


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.create(tmp_path)


def with_tls(settings: Settings, env: Mapping[str, str]) -> Settings:
    return dataclasses.replace(settings, tls=Tls.from_env(env))


@pytest_asyncio.fixture
async def served(
    urls: ServerUrls, prefix: str, keys: Keys, pki: Pki, request: pytest.FixtureRequest
) -> AsyncIterator[RunningService]:
    """inventory serving TLS; mutual when the test is marked so (its parameter)."""
    mutual = bool(getattr(request, "param", False))
    settings = with_tls(settings_for("inventory", urls, prefix, keys), pki.env(mutual))
    async with running_service(
        "inventory", build_inventory, Path("services/inventory/schema.sql"), settings
    ) as svc:
        yield svc


async def health(channel: grpc.aio.Channel) -> str:
    """The server's health, or the code of the call's failure."""
    try:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)


async def test_a_service_serves_tls_to_callers_that_trust_its_ca(
    served: RunningService, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    # The certificate's expiry, exported for the TlsCertificateExpiring alert; at a day away, also
    # logged at start.
    expires = REGISTRY.get_sample_value(
        "a4co_tls_certificate_expiry_timestamp_seconds", {"service": "inventory"}
    )
    assert expires == Tls.from_env(pki.env()).expires
    said = [r.getMessage() for r in caplog.get_records("setup") if r.levelname == "WARNING"]
    assert "the TLS certificate this service serves with expires in 1.0 days" in said, said
    caller = Tls.from_env({"A4CO_TLS_CA_FILE": str(pki.ca)})
    async with tls.channel(served.address, caller) as channel:
        assert await health(channel) == "SERVING"
        stock = inventory_grpc.InventoryServiceStub(channel)
        answer = await stock.CheckStock(
            inventory_pb.CheckStockRequest(
                lines=[inventory_pb.StockRequestLine(product_id="nada", quantity=1)]
            ),
            timeout=5,
        )
        assert not answer.all_available, "a product it does not know is not available"
    async with grpc.aio.insecure_channel(served.address) as channel:
        assert await health(channel) == "UNAVAILABLE", "plaintext is refused"
    stranger = Tls.from_env({"A4CO_TLS_CA_FILE": str(pki.stranger_ca)})
    async with tls.channel(served.address, stranger) as channel:
        assert await health(channel) == "UNAVAILABLE", "a caller that trusts another CA does not get in"


async def test_peers_call_each_other_over_tls(served: RunningService, pki: Pki) -> None:
    """As orders calls inventory: open_channel with the service's own TLS settings."""
    peer = PeerClient("inventory", open_channel(served.address, Tls.from_env(pki.env())))
    try:
        answer = await peer.call(
            inventory_grpc.InventoryServiceStub(peer.channel).CheckStock,
            inventory_pb.CheckStockRequest(
                lines=[inventory_pb.StockRequestLine(product_id="nada", quantity=1)]
            ),
        )
        assert not answer.all_available
    finally:
        await peer.channel.close()


@pytest.mark.parametrize("served", [True], indirect=True, ids=["mutual"])
async def test_mutual_tls_asks_every_caller_for_a_certificate_of_the_ca(
    served: RunningService, pki: Pki
) -> None:
    anonymous = Tls.from_env({"A4CO_TLS_CA_FILE": str(pki.ca)})
    async with tls.channel(served.address, anonymous) as channel:
        assert await health(channel) == "UNAVAILABLE", "a caller without a certificate is refused"
    async with tls.channel(served.address, Tls.from_env(pki.env(mutual=True))) as channel:
        assert await health(channel) == "SERVING"


async def test_grpcurl_with_the_flags_the_launcher_prints(served: RunningService, pki: Pki) -> None:
    flags = tls.grpcurl_flags(pki.env()).split()
    assert flags == ["-cacert", str(pki.ca)]
    code, out = await grpcurl(served.address, "list", flags=flags)
    assert code == 0, out
    assert "a4co.inventory.v1.InventoryService" in out.split()
    code, out = await grpcurl(
        served.address,
        "a4co.inventory.v1.InventoryService/CheckStock",
        data={"lines": [{"product_id": "nada", "quantity": 1}]},
        flags=flags,
    )
    assert code == 0, out
    assert json.loads(out).get("all_available", False) is False
    code, out = await grpcurl(served.address, "list")
    assert code != 0, out


@pytest.mark.parametrize("served", [True], indirect=True, ids=["mutual"])
async def test_grpcurl_presents_a_certificate_for_mutual_tls(served: RunningService, pki: Pki) -> None:
    flags = tls.grpcurl_flags(pki.env(mutual=True)).split()
    assert flags == ["-cacert", str(pki.ca), "-cert", str(pki.cert), "-key", str(pki.key)]
    code, out = await grpcurl(served.address, "list", flags=flags)
    assert code == 0, out
    code, out = await grpcurl(served.address, "list", flags=["-cacert", str(pki.ca)])
    assert code != 0, out


async def check_stock(peer: PeerClient) -> inventory_pb.CheckStockResponse:
    return await peer.call(
        peer.stub(inventory_grpc.InventoryServiceStub).CheckStock,
        inventory_pb.CheckStockRequest(lines=[inventory_pb.StockRequestLine(product_id="nada", quantity=1)]),
    )


async def test_a_renewed_certificate_is_served_without_a_restart(
    served: RunningService, pki: Pki, tmp_path: Path
) -> None:
    trusting_old = Tls.from_env({"A4CO_TLS_CA_FILE": str(pki.ca)})
    before = tls.channel(served.address, trusting_old)
    try:
        assert await health(before) == "SERVING"
        renewed = Authority.create(tmp_path, "renewed-ca")
        pki.renew(renewed, "inventory-renewed")
        served.infra.certificates.check()  # as the service's next look at its files, or SIGHUP
        assert served.infra.certificates.generation == 1
        trusting_new = Tls.from_env({"A4CO_TLS_CA_FILE": str(renewed.cert_file)})
        async with tls.channel(served.address, trusting_new) as channel:
            assert await health(channel) == "SERVING", "a new connection gets the renewed certificate"
        async with tls.channel(served.address, trusting_old) as channel:
            assert await health(channel) == "UNAVAILABLE", "and no longer the one before"
        assert await health(before) == "SERVING", "a connection made before is not cut"
        expires = REGISTRY.get_sample_value(
            "a4co_tls_certificate_expiry_timestamp_seconds", {"service": "inventory"}
        )
        assert expires == served.infra.certificates.tls.expires
        assert expires == Tls.from_env(pki.env()).expires
    finally:
        await before.close()


@pytest.mark.parametrize("served", [True], indirect=True, ids=["mutual"])
async def test_calls_to_a_peer_go_over_new_connections_with_renewed_files(
    served: RunningService, pki: Pki, tmp_path: Path
) -> None:
    """As orders calls inventory over mutual TLS, each with its own files, both renewed onto a new
    CA: the caller's next call opens a new channel with its new certificate and CA."""
    mine = pki.copy(tmp_path / "caller")
    certificates = Certificates(Tls.from_env(mine.env(mutual=True)), "caller")
    peer = PeerClient.to("inventory", served.address, certificates)
    peer.retire_after_s = 0.0
    try:
        assert not (await check_stock(peer)).all_available
        first, read_before = peer.channel, certificates.tls
        renewed = Authority.create(tmp_path, "renewed-ca")
        pki.renew(renewed, "inventory-renewed")
        mine.renew(renewed, "caller-renewed")
        served.infra.certificates.check()
        assert served.infra.certificates.generation == 1
        assert certificates.check()
        assert not (await check_stock(peer)).all_available
        assert peer.channel is not first, "the call went over a new channel"
        async with tls.channel(served.address, read_before) as channel:
            assert await health(channel) == "UNAVAILABLE", "a new connection with the files before is refused"
        await eventually(lambda: not peer._retiring, what="the channel before closed")
    finally:
        await peer.close()


async def test_sighup_makes_a_service_process_read_its_files_at_once(
    urls: ServerUrls, prefix: str, keys: Keys, pki: Pki, tmp_path: Path
) -> None:
    """An operator who has just renewed the files need not wait for the next look (an hour away
    here): SIGHUP, as for nginx or Prometheus; the service keeps running."""
    ready = tmp_path / "inventory.ready.json"
    env = dict(
        os.environ,
        **urls.as_env(),
        **pki.env(),
        A4CO_PREFIX=prefix,
        A4CO_JWT_PUBLIC_KEY_FILE=str(keys.public_file),
        A4CO_TLS_CHECK_S="3600",
    )
    async with service_process("inventory", env, ready) as proc:
        await asyncio.to_thread(wait_until, ready.exists, "inventory ready", 60)
        address = json.loads(ready.read_text())["grpc"]
        renewed = Authority.create(tmp_path, "renewed-ca")
        pki.renew(renewed, "inventory-renewed")
        trusting_new = Tls.from_env({"A4CO_TLS_CA_FILE": str(renewed.cert_file)})
        async with tls.channel(address, trusting_new) as channel:
            assert await health(channel) == "UNAVAILABLE", "not looked at yet"
        proc.send_signal(signal.SIGHUP)

        async def renewed_served() -> bool:
            async with tls.channel(address, trusting_new) as channel:
                return await health(channel) == "SERVING"

        await eventually(renewed_served, timeout=15, interval=0.2, what="the renewed certificate served")
        assert proc.returncode is None, "SIGHUP does not stop the service"
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    said = [line["message"] for line in log_lines(stderr)]
    assert "TLS files read again (change 1): new connections use them" in said, said


def scrape(port: int, caller: Tls | ssl.SSLContext | None) -> str:
    """The metrics endpoint's text, over HTTPS when `caller` is given; the failure's name if not."""
    context = tls.client_ssl_context(caller) if isinstance(caller, Tls) else caller
    url = f"{'https' if context else 'http'}://127.0.0.1:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return str(response.read().decode())
    except (OSError, http.client.HTTPException) as error:
        return type(error).__name__


async def test_the_metrics_endpoint_serves_the_same_tls_and_follows_its_renewal(
    pki: Pki, tmp_path: Path
) -> None:
    """With mutual TLS, Prometheus (here urllib) scrapes over HTTPS with a certificate of the CA;
    plaintext and a caller without a certificate get nothing. Renewed files are served from the
    next handshake (decision 59)."""
    certificates = Certificates(Tls.from_env(pki.env(mutual=True)), "metrics-tls")
    server = serve_metrics(0, "127.0.0.1", certificates)
    port = server.server_port
    try:
        caller = Tls.from_env(pki.env(mutual=True))
        assert "a4co_tls_certificate_expiry_timestamp_seconds" in await asyncio.to_thread(
            scrape, port, caller
        )
        assert "# TYPE" not in await asyncio.to_thread(scrape, port, None), "plaintext gets nothing"
        anonymous = Tls.from_env({"A4CO_TLS_CA_FILE": str(pki.ca)})
        assert "# TYPE" not in await asyncio.to_thread(scrape, port, anonymous), (
            "nor a caller without a certificate"
        )

        before = pki.copy(tmp_path / "before")
        renewed = Authority.create(tmp_path, "renewed-ca")
        pki.renew(renewed, "inventory-renewed")
        assert "# TYPE" not in await asyncio.to_thread(scrape, port, Tls.from_env(pki.env(mutual=True)))
        assert certificates.check()
        assert "# TYPE" in await asyncio.to_thread(scrape, port, Tls.from_env(pki.env(mutual=True)))

        # The CA replaced is trusted no more: a scraper that trusts both, with a certificate of
        # the one before, is refused.
        both = ssl.create_default_context(cadata=pki.ca.read_text() + before.ca.read_text())
        both.load_cert_chain(before.cert, before.key)
        assert "# TYPE" not in await asyncio.to_thread(scrape, port, both)
    finally:
        server.shutdown()
        server.server_close()


async def test_a_scraper_that_says_nothing_holds_only_its_own_connection(pki: Pki) -> None:
    """Each handshake is made in its connection's thread: while a caller connects and sends
    nothing, Prometheus still scrapes, and the silent connection is closed after the handshake's
    timeout."""
    certificates = Certificates(Tls.from_env(pki.env(mutual=True)), "metrics-silence")
    server = serve_metrics(0, "127.0.0.1", certificates, handshake_timeout_s=1.0)
    port = server.server_port
    try:
        with socket.create_connection(("127.0.0.1", port)) as silent:
            caller = Tls.from_env(pki.env(mutual=True))
            assert "# TYPE" in await asyncio.to_thread(scrape, port, caller)
            silent.settimeout(30)
            assert await asyncio.to_thread(silent.recv, 1) == b"", "closed once its time is up"
    finally:
        server.shutdown()
        server.server_close()
