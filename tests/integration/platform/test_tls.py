"""TLS on a service's gRPC server and on the calls between services (decision 58): a caller that
trusts the deployment's CA gets in, plaintext and strangers do not; with mutual TLS a caller
needs a certificate of its own. grpcurl, as another team would debug it."""

from __future__ import annotations

import dataclasses
import json
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
from services.platform.grpc.tls import Tls
from services.platform.local_servers import ServerUrls
from services.platform.settings import Settings
from tests.integration.services.harness import Keys, RunningService, running_service, settings_for
from tests.integration.services.test_grpcurl import grpcurl
from tests.support.certificates import Authority


@dataclasses.dataclass(frozen=True)
class Pki:
    """The deployment's CA, a service's certificate, and a CA nobody here trusts."""

    ca: Path
    cert: Path
    key: Path
    stranger_ca: Path

    def env(self, mutual: bool = False) -> dict[str, str]:
        return {
            "A4CO_TLS_CERT_FILE": str(self.cert),
            "A4CO_TLS_KEY_FILE": str(self.key),
            "A4CO_TLS_CA_FILE": str(self.ca),
            "A4CO_TLS_CLIENT_AUTH": "1" if mutual else "0",
        }


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ours, stranger = Authority.create(tmp_path, "a4co-ca"), Authority.create(tmp_path, "stranger-ca")
    cert, key = ours.issue(tmp_path, "inventory")
    return Pki(ours.cert_file, cert, key, stranger.cert_file)


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
