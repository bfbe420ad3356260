"""notifications' composition root: the file transport unless A4CO_SMTP_HOST is set."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from services.notifications import handlers, subscriptions
from services.notifications.adapters.live import LiveNotifications
from services.notifications.adapters.transports import (
    FileTransport,
    GuardedTransport,
    SmtpTransport,
    Transport,
)
from services.notifications.grpc_api import POLICIES, registration
from services.platform.events.subscriptions import bind
from services.platform.main import service_main
from services.platform.runtime import Infrastructure, ServiceParts


def transport() -> Transport:
    """SMTP when configured, else JSON lines in A4CO_NOTIFICATIONS_DIR (default ./.data/notifications)."""
    if host := os.environ.get("A4CO_SMTP_HOST"):
        port = int(os.environ.get("A4CO_SMTP_PORT", "25"))
        return SmtpTransport(host, port, os.environ.get("A4CO_SMTP_FROM", "no-reply@a4co.es"))
    return FileTransport(Path(os.environ.get("A4CO_NOTIFICATIONS_DIR", ".data/notifications")))


async def build(infra: Infrastructure) -> ServiceParts:
    """notifications' parts, wired."""
    deps = handlers.Deps(
        pool=infra.pool,
        redis=infra.redis,
        transport=GuardedTransport(transport()),
        prefix=infra.settings.prefix,
    )
    live = LiveNotifications(infra.redis, deps.channel)
    return ServiceParts(
        registrations=[registration(deps, live)],
        policies=POLICIES,
        subscriptions=bind(subscriptions.HANDLERS, infra.registry, deps),
        background=[
            functools.partial(
                handlers.deliver_again, deps, float(os.environ.get("A4CO_DELIVERY_RETRY_S", "5"))
            ),
            live.follow,
        ],
    )


if __name__ == "__main__":
    service_main("notifications", build, Path(__file__).with_name("schema.sql"))
