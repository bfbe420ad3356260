"""The supervisor's start: a service that cannot start stops the ones already started."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from services.launcher.supervisor import Supervisor
from services.platform.local_servers import ServerUrls
from tests.integration.services.harness import Keys


async def test_a_failed_start_leaves_no_service_running(urls: ServerUrls, keys: Keys, tmp_path: Path) -> None:
    env = dict(
        os.environ,
        **urls.as_env(),
        A4CO_PREFIX="l" + uuid.uuid4().hex[:10],
        A4CO_JWT_PRIVATE_KEY_FILE=str(keys.private_file),
        A4CO_JWT_PUBLIC_KEY_FILE=str(keys.public_file),
        A4CO_LOG_LEVEL="WARNING",
    )
    # `services.nowhere` does not exist: its process exits at once, while identity starts.
    supervisor = Supervisor(tmp_path, env, services=("identity", "nowhere"))
    with pytest.raises(RuntimeError, match="nowhere exited"):
        await supervisor.start()
    identity = supervisor.children["identity"].process
    assert identity is not None
    assert identity.returncode is not None, "identity was left running"
