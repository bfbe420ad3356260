"""Another team's client in another language: clients/node/walkthrough.mjs (Node.js, @grpc/grpc-js,
the .proto files loaded as they are) places an order through every service, each its own process,
in plaintext and over mutual TLS with the deployment's own files."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from services.launcher.supervisor import Supervisor
from services.platform.local_servers import ServerUrls
from tests.integration.services.harness import Keys
from tests.support.certificates import Authority
from tests.support.node import node, run_node


@pytest_asyncio.fixture(params=["plaintext", "mutual TLS"], scope="module", loop_scope="session")
async def deployment(
    request: pytest.FixtureRequest, urls: ServerUrls, keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Path, dict[str, str]]]:
    """Every service under the supervisor: the addresses file it writes, and the variables a
    client on the same machine is given (the TLS files, when the deployment has them)."""
    node()
    run_dir = Path(tmp_path_factory.mktemp("run"))
    tls: dict[str, str] = {}
    if request.param == "mutual TLS":
        authority = Authority.create(run_dir, "ca")
        cert, key = authority.issue(run_dir, "service")
        tls = {
            "A4CO_TLS_CERT_FILE": str(cert),
            "A4CO_TLS_KEY_FILE": str(key),
            "A4CO_TLS_CA_FILE": str(authority.cert_file),
            "A4CO_TLS_CLIENT_AUTH": "1",
        }
    env = dict(
        os.environ,
        **urls.as_env(),
        **tls,
        A4CO_PREFIX="n" + uuid.uuid4().hex[:12],
        A4CO_JWT_PRIVATE_KEY_FILE=str(keys.private_file),
        A4CO_JWT_PUBLIC_KEY_FILE=str(keys.public_file),
        A4CO_NOTIFICATIONS_DIR=str(run_dir / "mail"),
        A4CO_LOG_LEVEL="WARNING",
    )
    supervisor = Supervisor(run_dir, env)
    await supervisor.start()
    yield run_dir / "addresses.json", tls
    await supervisor.stop()


async def test_an_order_placed_from_node_goes_through_the_saga(
    deployment: tuple[Path, dict[str, str]],
) -> None:
    addresses, tls = deployment
    code, out, err = await run_node("walkthrough.mjs", str(addresses), env=tls)
    steps: dict[str, dict[str, Any]] = {}
    for line in out.splitlines():
        step = json.loads(line)
        steps[step.pop("step")] = step
    assert code == 0, (out, err)

    # Every invalid field named, as decoded from the BadRequest in grpc-status-details-bin.
    assert steps["invalid sign-up"] == {
        "code": "INVALID_ARGUMENT",
        "reason": "INVALID_REQUEST",
        "fields": ["display_name", "email", "password"],
    }
    # Money's int64 arrives as a string, the enums by name.
    assert steps["product on sale"]["price_cents"] == "2450"
    placed = steps["order placed"]
    assert placed["status"] == "ORDER_STATUS_PENDING"
    assert placed["same_order_on_retry"] is True  # the request_id
    total = int(placed["total_cents"])
    assert total > 2 * 2450  # two units and the delivery
    # The server stream told the customer each step, then ended when the client cancelled it.
    assert steps["order confirmed"] == {
        "status": "ORDER_STATUS_CONFIRMED",
        "notifications": [
            "a4co.orders.OrderCreated",
            "a4co.payments.PaymentProcessed",
            "a4co.orders.OrderStatusChanged",
        ],
        "told": "Pedido confirmado",
        "stream_ended": "CANCELLED",
    }
    assert steps["out of stock"] == {
        "code": "FAILED_PRECONDITION",
        "reason": "OUT_OF_STOCK",
        "domain": "orders.a4co",
    }
    # The welcome points and a point per euro paid.
    assert steps["points"] == {"points": str(50 + total // 100), "entries": 2}
    assert steps["deadline"] == {"code": "DEADLINE_EXCEEDED"}


@pytest.mark.parametrize("deployment", ["mutual TLS"], indirect=True)
async def test_a_plaintext_client_of_a_tls_deployment_fails_at_its_first_call(
    deployment: tuple[Path, dict[str, str]],
) -> None:
    addresses, _ = deployment
    code, out, _ = await run_node("walkthrough.mjs", str(addresses))
    assert code == 1
    failed = json.loads(out.splitlines()[-1])
    assert (failed["step"], failed["code"]) == ("failed", "UNAVAILABLE"), out
    assert len(out.splitlines()) == 1, out  # not past the first step
