"""The connection to NATS, over TLS when the server or the URL asks for it (decision 62).

nats-py tries a server it cannot reach again and again, which is what a service starting beside
its NATS wants. A certificate it cannot verify is another matter: nats-py then hangs in closing
the half-upgraded connection and never tries again nor raises (nats-io/nats.py#718), and no retry
would help anyway. `connect` turns that into NatsTlsError at once.

nats-py reports every failed attempt to reach NATS to its error callback, with a traceback, twice
a second for as long as NATS is away. A service says instead, in its log, that the connection was
lost (or NATS did not answer at start), again every REPEAT_S while that lasts, and when it is
back, after how long; each reconnection is counted (`a4co_nats_reconnections_total`). A subject
NATS refuses it for its user's permissions is said once every REPEAT_S, and counted too.

A NATS URL may name several servers, separated by commas, as NATS's own clients and tools take
them (`nats://n1:4222,nats://n2:4222,nats://n3:4222`): the client connects to one of them at
random and, should that server go, to another of the list or of those the cluster told it of
(decision 64).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.errors import StaleConnectionError, UnexpectedEOF
from nats.js.errors import APIError
from prometheus_client import Counter

from services.platform.events.credentials import (
    CREDS_FILE,
    NO_CREDENTIALS,
    NatsCredentials,
    redact,
    refused,
    split_server,
    url_auth,
)
from services.platform.events.permissions import JWT_CONTROL_LINE
from services.platform.grpc.tls import Tls, nats_ssl_context
from services.platform.resilience import cancel_and_wait

log = logging.getLogger(__name__)


SCHEMES = ("nats", "tls", "ws", "wss")
# How often a service says again that NATS is still away, while it keeps trying to reach it.
REPEAT_S = 30.0
# How a connection finds that its server has gone without a word (a host that died, a network
# that drops its packets: no FIN, no RST, decision 74): a PING every PING_INTERVAL_S, and the
# connection given up as stale, and made again to a server that answers, once more than
# MAX_OUTSTANDING_PINGS go unanswered, within 30 s. With nats-py's defaults (120 s, 2) that took
# 360 s (measured: a network namespace whose 127.0.0.1 became a blackhole route), while the
# consumers fetched nothing and the relays' publishes timed out.
PING_INTERVAL_S = 10
MAX_OUTSTANDING_PINGS = 2

RECONNECTIONS = Counter(
    "a4co_nats_reconnections_total",
    "Times a service's connection to NATS was lost and made again (to the same server or another"
    " of the cluster).",
    ["service"],
)

DENIALS = Counter(
    "a4co_nats_permission_violations_total",
    "Publishes and subscriptions NATS refused a service for its user's permissions (decision 68).",
    ["service"],
)

Callback = Callable[[], Awaitable[None]]
# What nats-server answers a protocol line past its `max_control_line` (-ERR), in lower case.
TOO_LONG = "maximum control line exceeded"


def servers(url: str) -> list[str]:
    """The servers of a NATS URL, in its order: one, or several separated by commas; a server
    without a scheme is `nats://`, as NATS's clients read it. ValueError, saying what is wrong,
    for a list with no server, a server without a host or with a port that is not a number, a
    scheme NATS does not speak, or WebSocket servers mixed with the others (nats-py refuses that)."""
    found = [part.strip() for part in url.split(",") if part.strip()]
    if not found:
        raise ValueError("no NATS server in it")
    for server in found:
        parts = split_server(server)
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


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` says that NATS could not be reached or that the connection to it broke: refused,
    reset or timed out, closed by the server mid-read, gone stale, or a TLS handshake that failed."""
    return isinstance(exc, (OSError, UnexpectedEOF, StaleConnectionError))


class LinkLog:
    """What a process says of its connection to NATS: once when it is lost (or NATS does not answer
    at start), again every REPEAT_S while that lasts, with how long and how many attempts, and once
    when it is back; each failed attempt in between only at DEBUG. A failed TLS handshake is an
    ERROR, and so are credentials refused: settings to look at, said as soon as they are the
    reason (a server that takes the connection back on a new configuration, then refuses it);
    the rest WARNING, NATS away."""

    def __init__(self, url: str, service: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.url, self.clock = redact(url), clock
        self.reconnections = RECONNECTIONS.labels(service)
        self.server: str | None = None  # the server connected to, or last connected to
        self.away_since: float | None = None
        self.said_at = 0.0
        self.attempts = 0
        self.said_setting = False  # whether a setting to look at was said in this outage

    def _away(self, reason: str, level: int) -> None:
        now = self.clock()
        self.away_since, self.said_at, self.attempts = now, now, 0
        if self.server is None:
            log.log(level, "NATS at %s does not answer%s; trying again until it does", self.url, reason)
        else:
            log.log(
                level,
                "lost the connection to NATS at %s%s; connecting again until it answers",
                self.server,
                reason,
            )

    def failed(self, exc: BaseException) -> None:
        """An attempt to connect failed, or the connection broke, with `exc` (`unreachable`)."""
        now = self.clock()
        setting = isinstance(exc, ssl.SSLError) or refused(exc)
        level = logging.ERROR if setting else logging.WARNING
        if self.away_since is None:
            broke = self.server is not None
            self._away(f" ({exc})", level)
            self.said_setting = setting
            if broke:  # the connection that was up broke: not an attempt to connect
                return
        elif setting and not self.said_setting:
            self.said_at, self.said_setting = now, True
            log.error(
                "NATS at %s refuses this connection (%s); trying again until it accepts it", self.url, exc
            )
        elif now - self.said_at >= REPEAT_S:
            self.said_at = now
            log.log(
                level,
                "NATS still away after %.0f s (%d attempts), the last: %s",
                self.said_at - self.away_since,
                self.attempts,
                exc,
            )
        else:
            log.debug("NATS: %s", exc)
        self.attempts += 1

    def lost(self) -> None:
        """The connection was lost (nats-py's disconnected callback, while it is not being closed)."""
        if self.away_since is None:
            self._away("", logging.WARNING)

    def connected(self, server: str | None, *, again: bool) -> None:
        """Connected to `server`: for the first time, or `again` after the connection was lost.
        None when the connection was closed or lost again before this was said (nats-py calls
        back after a round trip): the server last connected to, or the URL, is said instead."""
        server = server or self.server or self.url
        if self.away_since is not None:
            away = self.clock() - self.away_since
            what = "reconnected" if again else "connected"
            log.info(
                "%s to NATS at %s after %.1f s away (%d attempts failed)", what, server, away, self.attempts
            )
        if again:
            self.reconnections.inc()
        self.server, self.away_since = server, None


def denied(exc: BaseException) -> bool:
    """Whether `exc` is NATS refusing a publish or a subscription for the user's permissions
    (nats-py passes it to the error callback and keeps the connection)."""
    return "permissions violation" in str(exc).lower()


class DenialLog:
    """What a process says when NATS refuses it a subject for its user's permissions: an ERROR
    naming the subject, once per subject every REPEAT_S (a relay publishes the same refused row
    again and again), each counted (`a4co_nats_permission_violations_total`)."""

    def __init__(self, service: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.count = DENIALS.labels(service)
        self.said: dict[str, float] = {}

    def denied(self, exc: BaseException) -> None:
        self.count.inc()
        what, now = str(exc).removeprefix("nats: "), self.clock()
        if now - self.said.get(what, -REPEAT_S) < REPEAT_S:
            return
        self.said[what] = now
        log.error(
            "NATS refused this service's user: %s (in lower case, as nats-py reports it; NATS's log"
            " has the subject as it is). Its permissions must allow what the service does:"
            " `a4co nats-permissions` prints what each service needs (decision 68)",
            what,
        )


class NatsSettingError(RuntimeError):
    """A setting of the connection to NATS to correct, not an outage to wait out: the service stops
    with EX_CONFIG (78), the `a4co` command with 2, saying which."""


class NatsTlsError(NatsSettingError):
    """NATS's certificate could not be verified."""


class NatsAuthError(NatsSettingError):
    """NATS refused the process's credentials (or wants some, and it gave none)."""


async def connect(
    url: str, tls: Tls, credentials: NatsCredentials = NO_CREDENTIALS, **options: Any
) -> NatsClient:
    """`nats.connect` to the `servers` of `url`, with `options`, the context of `tls`'s files
    (`nats_ssl_context`) and `credentials`; ValueError for a URL `servers` refuses. A setting to
    correct is raised at once rather than tried again for ever: NatsTlsError when NATS's
    certificate cannot be verified (nats-py would hang, nats-io/nats.py#718), NatsAuthError when
    NATS refuses the credentials; each names what to set. Errors go to `options["error_cb"]` if
    given, else to the log: NATS away or back as `LinkLog` says it, under the service named by
    `options["name"]`."""
    loop = asyncio.get_running_loop()
    wrong: asyncio.Future[NatsSettingError] = loop.create_future()  # a setting, found at start
    report = options.pop("error_cb", None)
    name = str(options.get("name") or "")
    link, denials = LinkLog(url, name), DenialLog(name)
    nc = NatsClient()

    async def error(exc: Exception) -> None:
        if isinstance(exc, ssl.SSLCertVerificationError) and not wrong.done():
            wrong.set_result(
                NatsTlsError(
                    f"cannot connect to NATS at {redact(url)} over TLS: {exc}. A4CO_TLS_CA_FILE must"
                    " hold the CA of NATS's certificate (unless a public CA issued it)"
                )
            )
        elif TOO_LONG in str(exc).lower() and not wrong.done():
            wrong.set_result(
                NatsSettingError(
                    f"NATS at {redact(url)} refused this connection ({exc}): its CONNECT line is"
                    f" longer than the server takes. A user JWT holds its permissions ({CREDS_FILE});"
                    f" nats-server's configuration needs max_control_line: {JWT_CONTROL_LINE}"
                    " (decision 68)"
                )
            )
        elif refused(exc) and not wrong.done():
            wrong.set_result(
                NatsAuthError(
                    f"NATS at {redact(url)} refused this connection ({exc}): {credentials.hint(url)}"
                )
            )
        elif report is not None:
            await report(exc)
        elif unreachable(exc) or refused(exc):
            link.failed(exc)
        elif denied(exc):
            denials.denied(exc)
        elif isinstance(exc, APIError):
            # JetStream refused a publish_async (503 while a cluster elects a stream's leader,
            # 409 "duplicate message id is in process" while its first copy is being stored).
            # nats-py raises that here instead of on the publish's future (nats-io/nats.py#985),
            # which stays pending: the relay publishes the rows again after its acknowledgement
            # timeout, and the stream keeps one copy of each (Nats-Msg-Id).
            log.warning("NATS refused a publish, to be published again: %s", exc)
        else:
            log.error("NATS: %s", exc, exc_info=exc)  # as nats-py's own callback, which this replaces

    disconnected: Callback | None = options.pop("disconnected_cb", None)
    reconnected: Callback | None = options.pop("reconnected_cb", None)

    async def lost() -> None:
        if not nc.is_closed:  # nats-py calls it on a close too
            link.lost()
        if disconnected is not None:
            await disconnected()

    async def back() -> None:
        link.connected(_server(nc), again=True)
        if reconnected is not None:
            await reconnected()

    options.setdefault("ping_interval", PING_INTERVAL_S)
    options.setdefault("max_outstanding_pings", MAX_OUTSTANDING_PINGS)
    options.update(url_auth(url), **credentials.options())
    options.update(error_cb=error, disconnected_cb=lost, reconnected_cb=back, tls=nats_ssl_context(tls))
    connecting = loop.create_task(nc.connect(servers(url), **options), name="connect to NATS")
    either: list[asyncio.Future[Any]] = [connecting, wrong]
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:  # a setting to correct, or this start cancelled: no connecting left behind
        if not connecting.done():
            await cancel_and_wait(connecting, 5)
    if not wrong.done():
        wrong.cancel()  # from now on, NATS refusing is said in the log (LinkLog)
        connecting.result()  # or raise what it raised
        link.connected(_server(nc), again=False)
        return nc
    if connecting.done() and not connecting.cancelled() and connecting.exception() is None:
        await nc.close()  # connected in the same moment: a setting to correct all the same
    raise wrong.result()


def _server(nc: NatsClient) -> str | None:
    """The URL of the server `nc` is connected to, without a password or token; None once it is
    not connected."""
    parsed = nc.connected_url
    return redact(parsed.geturl()) if parsed is not None else None
