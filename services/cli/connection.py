"""Where the command line finds the servers: flags, then the environment, then the defaults."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import nats
import nats.errors
import typer
from nats.js import JetStreamContext
from nats.js.errors import ServiceUnavailableError

from services.platform.events.connection import NatsSettingError, denied
from services.platform.events.connection import connect as connect_nats
from services.platform.events.credentials import NatsCredentials, redact
from services.platform.events.streams import StreamMissingError
from services.platform.events.topology import Topology
from services.platform.grpc.tls import Tls, TlsSettingsError
from services.platform.settings import prefix_error

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"

# The options every command that reads the event streams takes.
NatsUrl = Annotated[
    str | None,
    typer.Option(
        "--nats-url",
        help="NATS URL, or a cluster's URLs separated by commas \\[env A4CO_NATS_URL]; a NATS that"
        " wants credentials gets A4CO_NATS_CREDS_FILE, A4CO_NATS_NKEY_FILE, or the URL's user and password",
    ),
]
Prefix = Annotated[str | None, typer.Option("--prefix", help="deployment prefix \\[env A4CO_PREFIX]")]


@dataclass(frozen=True, slots=True)
class Target:
    """The deployment a command acts on."""

    nats_url: str
    prefix: str

    @classmethod
    def resolve(cls, nats_url: str | None, prefix: str | None) -> Target:
        """Flags win over `A4CO_NATS_URL` / `A4CO_PREFIX`, then over what `make run` wrote in
        `$A4CO_DATA_DIR/addresses.json`, then over the defaults."""
        running = running_deployment()
        return cls(
            nats_url=nats_url
            or os.environ.get("A4CO_NATS_URL")
            or running.get("servers", {}).get("A4CO_NATS_URL")
            or DEFAULT_NATS_URL,
            prefix=deployment_prefix(prefix),
        )

    @property
    def topology(self) -> Topology:
        """Names on the servers for this deployment."""
        return Topology(self.prefix)

    def missing_stream(self, stream: str) -> typer.BadParameter:
        """The error that ends a command finding no stream `stream` (its name, not yet prefixed)."""
        return typer.BadParameter(
            f"NATS at {redact(self.nats_url)} has no stream {self.topology.stream(stream)}:"
            " is the deployment running (its services make their streams), and is its"
            " prefix --prefix / A4CO_PREFIX?"
        )


def deployment_prefix(flag: str | None) -> str:
    """`--prefix`, else `A4CO_PREFIX`, else none; one the services would refuse is refused here
    too, before it names streams, subjects or schemas of no deployment."""
    prefix = flag if flag is not None else os.environ.get("A4CO_PREFIX", "")
    if problem := prefix_error(prefix):
        raise typer.BadParameter(problem, param_hint="'--prefix'")
    return prefix


def client_tls() -> Tls:
    """How to call the services: over TLS with the CA of `A4CO_TLS_CA_FILE` (and, with
    `A4CO_TLS_CLIENT_AUTH=1`, the certificate and key of `A4CO_TLS_CERT_FILE` and
    `A4CO_TLS_KEY_FILE`), as the services call each other (decision 58); plaintext when unset."""
    try:
        return Tls.from_env(os.environ)
    except TlsSettingsError as exc:
        raise typer.BadParameter(str(exc)) from None


def nats_credentials() -> NatsCredentials:
    """Who to be on NATS: `A4CO_NATS_CREDS_FILE` or `A4CO_NATS_NKEY_FILE`, as the services
    (decision 67); a user and password in the URL need nothing more."""
    try:
        return NatsCredentials.from_env(os.environ)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def running_deployment() -> dict[str, Any]:
    """What `make run` wrote about the running deployment, or {} when nothing runs."""
    path = Path(os.environ.get("A4CO_DATA_DIR", ".data")) / "addresses.json"
    try:
        document: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return document


class NatsUnansweredError(typer.BadParameter):
    """NATS could not be reached, or did not answer in time: said as a bad parameter (status 2),
    unless the command can report what it found without it (`a4co status`)."""


@asynccontextmanager
async def jetstream(target: Target) -> AsyncIterator[JetStreamContext]:
    """A JetStream context on the target's NATS server, closed on exit. NATS refusing the user
    something (its permissions) ends the command at once, saying what, instead of a request
    waiting for an answer that does not come."""
    command = asyncio.current_task()
    refusals: list[str] = []
    working = False  # whether the command's own work (the body) is under way

    async def error(exc: Exception) -> None:
        """Connection errors are raised to the command, not logged by nats-py; a refusal stops its
        work."""
        if denied(exc) and working and not refusals and command is not None:
            refusals.append(str(exc).removeprefix("nats: "))
            command.cancel()

    try:
        nc = await connect_nats(
            target.nats_url,
            client_tls(),
            nats_credentials(),
            connect_timeout=3,
            max_reconnect_attempts=1,
            error_cb=error,  # the failure is reported once, below, not as nats-py's traceback
        )
    except NatsSettingError as exc:
        raise typer.BadParameter(str(exc)) from None
    except ValueError as exc:  # the URL itself (`servers`)
        raise typer.BadParameter(f"NATS URL {redact(target.nats_url)!r}: {exc}") from None
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        raise NatsUnansweredError(
            f"cannot reach NATS at {redact(target.nats_url)} ({exc}): start the marketplace with `make run`,"
            " or point --nats-url or A4CO_NATS_URL at a running server"
        ) from None
    try:
        working = True
        yield nc.jetstream()
    except StreamMissingError as exc:
        raise target.missing_stream(exc.stream) from None
    except ServiceUnavailableError:
        raise typer.BadParameter(
            f"NATS at {redact(target.nats_url)} has no JetStream to answer: is the server started"
            " with JetStream (--jetstream, or a jetstream block in its configuration), and has its"
            " cluster a leader?"
        ) from None
    except (nats.errors.TimeoutError, TimeoutError):
        raise NatsUnansweredError(
            f"NATS at {redact(target.nats_url)} did not answer in time: is it overloaded, or has"
            " its JetStream cluster lost its leader (a4co status)?"
        ) from None
    except asyncio.CancelledError:
        if not refusals or command is None:
            raise
        command.uncancel()
        flag = f" --prefix {target.prefix}" if target.prefix else ""
        raise typer.BadParameter(
            f"NATS at {redact(target.nats_url)} refused this user: {refusals[0]} (in lower case, as"
            f" nats-py reports it). The command's user needs what `a4co nats-permissions{flag}` gives"
            " the user a4co, and the deployment's prefix (--prefix, A4CO_PREFIX)"
        ) from None
    finally:
        working = False
        await nc.close()


def database_shown(dsn: str) -> str:
    """A database URL to print: its password, if it has one, as ***."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}"))


class DatabaseUnansweredError(Exception):
    """PostgreSQL, reached, did not answer a statement within its timeout: a server stalled (its
    processes stopped, its packets dropped) or too busy."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"no answer within {timeout_s:g} s")
        self.timeout_s = timeout_s


@asynccontextmanager
async def database(
    dsn: str, timeout_s: float, connect_timeout_s: float | None = None
) -> AsyncIterator[asyncpg.Connection[Any]]:
    """A command's connection to PostgreSQL (`connect_timeout_s` to connect, `timeout_s` by
    default), each statement given `timeout_s`: one left unanswered raises DatabaseUnansweredError,
    the connection dropped without the goodbye a stalled server would not answer either."""
    conn: asyncpg.Connection[Any] = await asyncpg.connect(
        dsn, timeout=connect_timeout_s or timeout_s, command_timeout=timeout_s
    )
    try:
        yield conn
    except TimeoutError:
        conn.terminate()
        raise DatabaseUnansweredError(timeout_s) from None
    finally:
        if not conn.is_closed():
            await conn.close(timeout=timeout_s)
