"""`make run`: the whole marketplace on this machine, with demo data of Jaén.

Starts NATS JetStream, PostgreSQL and Redis from their wheels (data in A4CO_DATA_DIR, default
./.data, reused by the next run; one that exits is started again), every service as its own
process under the supervisor, loads the demo once, prints where everything answers, and stops it
all on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

from services.cli.permissions import deployment_users
from services.launcher import demo
from services.launcher.keeper import ServerKeeper
from services.launcher.supervisor import SERVICES, Endpoint, StartError, Supervisor
from services.platform.auth import generate_keypair
from services.platform.events.credentials import with_user
from services.platform.events.permissions import COMMAND, render_config
from services.platform.events.topology import Topology
from services.platform.grpc import tls
from services.platform.local_servers import LocalServers, ServerError, ServerUrls

COLOURS = ["31", "32", "33", "34", "35", "36", "91", "92", "93", "94", "95", "96"]
# Stable, memorable ports when they are free: gRPC 50051.., metrics 9101..
PREFERRED = {name: (50051 + i, 9101 + i) for i, name in enumerate(SERVICES)}


def keys(data_dir: Path) -> tuple[Path, Path]:
    """The token key pair of this installation, made on first run."""
    directory = data_dir / "keys"
    private, public = directory / "jwt.key", directory / "jwt.pub"
    if not private.exists():
        directory.mkdir(parents=True, exist_ok=True)
        private_pem, public_pem = generate_keypair()
        private.write_text(private_pem)
        private.chmod(0o600)
        public.write_text(public_pem)
    return private, public


def printer(colour: bool) -> dict[str, str]:
    """ANSI colour per service (none when NO_COLOR is set or output is not a terminal)."""
    return {n: COLOURS[i % len(COLOURS)] for i, n in enumerate([*SERVICES, "supervisor"])} if colour else {}


class Terminal:
    """Where the launcher writes. Once nobody reads it (`make run | head`, a closed terminal), it
    writes nothing more and asks everything to stop: SIGPIPE would end a plain program there, and
    the launcher must first stop the servers and services it started."""

    def __init__(self, on_gone: Callable[[], None], stream: TextIO | None = None) -> None:
        self.on_gone = on_gone
        self.stream = stream
        self.gone = False

    def say(self, text: str) -> None:
        """Write a line, unless the reader is gone."""
        if self.gone:
            return
        stream = self.stream or sys.stdout
        try:
            print(text, file=stream, flush=True)
        except BrokenPipeError:
            self.gone = True
            # Python flushes the stream again at exit: what it still holds goes nowhere.
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
                os.close(devnull)
            self.on_gone()


class TerminalLog(logging.Handler):
    """The launcher's own warnings on its terminal, as a service's lines are, from "launcher"
    (else Python would print them bare, between the prefixed lines)."""

    def __init__(self, say: Callable[[str, str], None]) -> None:
        super().__init__(logging.WARNING)
        self._say = say

    def emit(self, record: logging.LogRecord) -> None:
        """Say the record's level and message."""
        try:
            self._say("launcher", f"{record.levelname.lower()} {record.getMessage()}")
        except Exception:  # logging's rule: a handler never raises
            self.handleError(record)


def show(colours: dict[str, str], service: str, line: str, log_dir: Path | None = None) -> str:
    """One log line, prefixed with its service; JSON lines are shortened to level and message, and
    to the last line of the exception one carries, with where its whole traceback is."""
    with contextlib.suppress(ValueError, AttributeError):
        record = json.loads(line)
        line = f"{record.get('level', '')} {record.get('message', '')}"
        if exception := str(record.get("exception") or "").strip():
            where = f"; traceback in {log_dir / service}.log" if log_dir is not None else ""
            line += f" ({exception.splitlines()[-1]}{where})"
    label = f"{service:>13} |"
    if service in colours:
        label = f"\033[{colours[service]}m{label}\033[0m"
    return f"{label} {line}"


def summary(
    urls: ServerUrls,
    endpoints: dict[str, Endpoint],
    accounts: demo.DemoAccounts,
    seconds: float,
    admin: str = "",
) -> str:
    """What is running and how to try it."""
    scheme = "https" if os.environ.get("A4CO_TLS_CERT_FILE") else "http"  # as the services serve them
    rows = "\n".join(
        f"  {n:<14} grpc {e.grpc:<18} metrics {scheme}://127.0.0.1:{e.metrics_port}/metrics"
        for n, e in endpoints.items()
    )
    catalog, identity = endpoints["catalog"].grpc, endpoints["identity"].grpc
    flags = tls.grpcurl_flags(os.environ)
    return f"""
a4co is ready in {seconds:.1f} s.

servers
  nats           {urls.nats_url}
  postgres       {urls.database_url}
  redis          {urls.redis_url}
services
{rows}

demo customer    {accounts.customer_email} / {accounts.password}{admin}

try
  grpcurl {flags} {catalog} list
  grpcurl {flags} -d '{{"query": "aceite olivia virjen"}}' {catalog} a4co.catalog.v1.CatalogService/SearchProducts
  grpcurl {flags} -d '{{"email": "{accounts.customer_email}", "password": "{accounts.password}"}}' {identity} a4co.identity.v1.IdentityService/Login

Ctrl-C stops everything.
"""


def nats_users(env: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """The NATS that `make run` starts gives each service a user of its own, allowed only what it
    does (decision 68), with a password made for this run; any other client (the `a4co` command,
    events.mjs) is the user `a4co`. Returns each user's password and the configuration; nothing
    when A4CO_NATS_URL names a NATS of the deployment's own."""
    if env.get("A4CO_NATS_URL"):
        return {}, ""
    topology = Topology(env.get("A4CO_PREFIX", ""))
    users = deployment_users(topology)
    passwords = {u.user: secrets.token_hex(16) for u in users}
    return passwords, f'{render_config(users, topology, passwords)}no_auth_user: "{COMMAND}"\n'


async def run(data_dir: Path) -> None:
    """Start, load, report, and wait for Ctrl-C or SIGTERM."""
    started = time.monotonic()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    terminal = Terminal(stop.set)
    colours = printer(sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
    passwords, nats_config = nats_users(os.environ)
    servers = LocalServers(data_dir / "servers", durable=True, nats_config=nats_config)
    urls = servers.start()
    private, public = keys(data_dir)
    env = dict(
        os.environ,
        **urls.as_env(),
        A4CO_JWT_PRIVATE_KEY_FILE=str(private),
        A4CO_JWT_PUBLIC_KEY_FILE=str(public),
        A4CO_NOTIFICATIONS_DIR=str(data_dir / "notifications"),
    )
    # An operator's account for the demo, with the demo's password, unless one is configured.
    demo_admin = "A4CO_ADMIN_EMAIL" not in env
    if demo_admin:
        env.update(A4CO_ADMIN_EMAIL=demo.ADMIN_EMAIL, A4CO_ADMIN_PASSWORD=demo.DEMO_PASSWORD)

    def say(source: str, line: str) -> None:
        terminal.say(show(colours, source, line, data_dir / "run"))

    logged = TerminalLog(say)
    logging.getLogger().addHandler(logged)
    # A server that exits is started again on its port and data, as a service is (below).
    keeper = asyncio.create_task(ServerKeeper(servers.managed(), on_line=say).run())
    own_user = {
        s: {"A4CO_NATS_URL": with_user(urls.nats_url, s, passwords[s])} for s in passwords if s in SERVICES
    }
    supervisor = Supervisor(
        data_dir / "run", env, on_line=say, preferred_ports=PREFERRED, service_env=own_user
    )
    try:
        endpoints = await supervisor.start()
        addresses = {n: e.grpc for n, e in endpoints.items()}
        accounts = await demo.load(addresses, data_dir)
        services = {n: {"grpc": e.grpc, "metrics_port": e.metrics_port} for n, e in endpoints.items()}
        document = {
            "servers": urls.as_env(),
            "services": services,
            "nats_monitoring": servers.nats_monitoring,
        }
        (data_dir / "addresses.json").write_text(json.dumps(document, indent=2))
        admin = f"\ndemo admin       {demo.ADMIN_EMAIL} / {demo.DEMO_PASSWORD}" if demo_admin else ""
        terminal.say(summary(urls, endpoints, accounts, time.monotonic() - started, admin))
        terminal.say("a4co ready")
        await stop.wait()
    finally:
        terminal.say("stopping")
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        await supervisor.stop()
        servers.stop()
        logging.getLogger().removeHandler(logged)
        terminal.say("stopped")


def main() -> None:
    """Entry point of `python -m services.launcher` and `make run`."""
    data_dir = Path(os.environ.get("A4CO_DATA_DIR", ".data")).resolve()
    try:
        asyncio.run(run(data_dir))
    except (StartError, ServerError) as exc:  # what failed, and its log: no traceback of ours
        print(f"a4co could not start: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
