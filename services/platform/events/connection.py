"""The connection to NATS, over TLS when the server or the URL asks for it (decision 62).

nats-py tries a server it cannot reach again and again, which is what a service starting beside
its NATS wants. A certificate it cannot verify is another matter: nats-py then hangs in closing
the half-upgraded connection and never tries again nor raises (nats-io/nats.py#718), and no retry
would help anyway. `connect` turns that into NatsTlsError at once.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import nats
from nats.aio.client import Client as NatsClient

from services.platform.grpc.tls import Tls, nats_ssl_context
from services.platform.resilience import cancel_and_wait

log = logging.getLogger(__name__)


class NatsTlsError(RuntimeError):
    """NATS's certificate could not be verified: a setting to correct, not an outage to wait out."""


async def connect(url: str, tls: Tls, **options: Any) -> NatsClient:
    """`nats.connect(url, **options)` with the context of `tls`'s files (`nats_ssl_context`);
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
        else:
            log.error("NATS: %s", exc, exc_info=exc)  # as nats-py's own callback, which this replaces

    connecting = loop.create_task(
        nats.connect(url, error_cb=error, tls=nats_ssl_context(tls), **options), name="connect to NATS"
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
