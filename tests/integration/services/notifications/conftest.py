"""notifications started in-process on the test session's servers, its mail written to a file."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from services.notifications.__main__ import build
from services.platform.local_servers import ServerUrls
from tests.integration.services.harness import Keys, RunningService, running_service, settings_for

StartNotifications = Callable[..., contextlib.AbstractAsyncContextManager[RunningService]]


@pytest.fixture
def start_notifications(
    urls: ServerUrls, prefix: str, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> StartNotifications:
    """Starts notifications (as often as called), its mail in `tmp_path / "mail"`, with the
    settings given changed (`start_notifications(grpc_keepalive_s=0.5)`); the settings read from
    the environment are read at each start."""
    monkeypatch.setenv("A4CO_NOTIFICATIONS_DIR", str(tmp_path / "mail"))
    schema, settings = (
        Path("services/notifications/schema.sql"),
        settings_for("notifications", urls, prefix, keys),
    )

    def start(**changes: Any) -> contextlib.AbstractAsyncContextManager[RunningService]:
        return running_service("notifications", build, schema, replace(settings, **changes))

    return start


@pytest_asyncio.fixture
async def notifications(start_notifications: StartNotifications) -> AsyncIterator[RunningService]:
    async with start_notifications() as svc:
        svc.runner.server.interceptor.stream_recheck_s = 0.2  # a stream's Logout noticed at once
        yield svc
