"""The connection to NATS, over TLS when the server or the URL asks for it (decision 62).

nats-py tries a server it cannot reach again and again, which is what a service starting beside
its NATS wants. A certificate it cannot verify is another matter: nats-py then hangs in closing
the half-upgraded connection and never tries again nor raises (nats-io/nats.py#718), and no retry
would help anyway. `connect` turns that into NatsTlsError at once.

A NATS URL may name several servers, separated by commas, as NATS's own clients and tools take
them (`nats://n1:4222,nats://n2:4222,nats://n3:4222`): the client connects to one of them at
random and, should that server go, to another of the list or of those the cluster told it of
(decision 64).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client as NatsClient
from nats.js.errors import APIError

from services.platform.grpc.tls import Tls, nats_ssl_context
from services.platform.resilience import cancel_and_wait

log = logging.getLogger(__name__)


SCHEMES = ("nats", "tls", "ws", "wss")


def servers(url: str) -> list[str]:
    """The servers of a NATS URL, in its order: one, or several separated by commas; a server
    without a scheme is `nats://`, as NATS's clients read it. ValueError, saying what is wrong,
    for a list with no server, a server without a host or with a port that is not a number, a
    scheme NATS does not speak, or WebSocket servers mixed with the others (nats-py refuses that)."""
    found = [part.strip() for part in url.split(",") if part.strip()]
    if not found:
        raise ValueError("no NATS server in it")
    for server in found:
        parts = urlsplit(server if "://" in server else f"nats://{server}")
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise ValueError(f"{server!r} has a port that is not a number") from None
        if parts.scheme not in SCHEMES:
            raise ValueError(f"{server!r}: the scheme must be one of {', '.join(SCHEMES)}")
        if not parts.hostname:
            raise ValueError(f"{server!r} names no host")
    websocket = {server.startswith(("ws://", "wss://")) for server in found}
    if len(websocket) > 1:
        raise ValueError("WebSocket servers (ws://, wss://) cannot be mixed with the others")
    return found


class NatsTlsError(RuntimeError):
    """NATS's certificate could not be verified: a setting to correct, not an outage to wait out."""


async def connect(url: str, tls: Tls, **options: Any) -> NatsClient:
    """`nats.connect` to the `servers` of `url`, with `options` and the context of `tls`'s files
    (`nats_ssl_context`); ValueError for a URL `servers` refuses;
    NatsTlsError, naming the variable to set, when NATS's certificate cannot be verified. Errors
    go to `options["error_cb"]` if given, else to the log."""
    loop = asyncio.get_running_loop()
    unverified: asyncio.Future[ssl.SSLCertVerificationError] = loop.create_future()
    report = options.pop("error_cb", None)

    async def error(exc: Exception) -> None:
        if isinstance(exc, ssl.SSLCertVerificationError) and not unverified.done():
            unverified.set_result(exc)
        elif report is not None:
            await report(exc)
        elif isinstance(exc, APIError):
            # JetStream refused a publish_async (503 while a cluster elects a stream's leader,
            # 409 "duplicate message id is in process" while its first copy is being stored).
            # nats-py raises that here instead of on the publish's future (nats-io/nats.py#985),
            # which stays pending: the relay publishes the rows again after its acknowledgement
            # timeout, and the stream keeps one copy of each (Nats-Msg-Id).
            log.warning("NATS refused a publish, to be published again: %s", exc)
        else:
            log.error("NATS: %s", exc, exc_info=exc)  # as nats-py's own callback, which this replaces

    connecting = loop.create_task(
        nats.connect(servers(url), error_cb=error, tls=nats_ssl_context(tls), **options),
        name="connect to NATS",
    )
    either: list[asyncio.Future[Any]] = [connecting, unverified]
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:  # a certificate not verified, or this start cancelled: no connecting left behind
        if not connecting.done():
            await cancel_and_wait(connecting, 5)
    if connecting.done() and not connecting.cancelled():
        unverified.cancel()
        return connecting.result()  # or what it raised
    raise NatsTlsError(
        f"cannot connect to NATS at {url} over TLS: {unverified.result()}. A4CO_TLS_CA_FILE must hold"
        " the CA of NATS's certificate (unless a public CA issued it)"
    )
