"""Run every service as its own process: fixed ports, readiness, restarts with backoff, clean stop.

Each service gets a gRPC and a metrics port chosen once, so a restarted service comes back at the
same address and its peers need not learn a new one. orders starts last, told where its peers are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from services.platform.grpc.server import EXIT_CANNOT_LISTEN
from services.platform.local_servers import free_port, with_parent_death_signal
from services.platform.resilience import Backoff

log = logging.getLogger(__name__)

# orders calls these four synchronously, so they start first; orders starts last.
SERVICES = (
    "identity",
    "inventory",
    "payments",
    "catalog",
    "geo",
    "artisans",
    "notifications",
    "loyalty",
    "analytics",
    "cms",
    "orders",
)
PEERS_OF_ORDERS = ("catalog", "inventory", "payments", "geo")
# Off every synchronous contract and off the order's path: when the cores are short they yield to
# the services that answer calls and run the saga (decision 23). Their events wait in their
# streams meanwhile and are handled later, in larger batches. `A4CO_BACKGROUND_NICE` sets how much
# they yield (0: not at all).
BACKGROUND = ("notifications", "loyalty", "analytics")
BACKGROUND_NICE = 10
LISTEN_ATTEMPTS = 3  # other ports tried for a service whose gRPC or metrics port was taken meanwhile
# A service (or a server, services/launcher/keeper.py) that ran this long before it exited was
# not crash-looping: its restart waits the backoff's first delay again, not the longest yet.
STEADY_S = 60.0


def restarts_in_a_row(restarts: int, ran_s: float, steady_s: float = STEADY_S) -> int:
    """The count of restarts in a row of a process that exited after running `ran_s`, `restarts`
    before it: one more, or 1 anew after a steady run. Its backoff's step."""
    return 1 if ran_s >= steady_s else restarts + 1


def _port(preferred: int) -> int:
    """`preferred` when it is free on 127.0.0.1, else any free port."""
    if preferred:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", preferred))
            except OSError:
                return free_port()
            return preferred
    return free_port()


def lower_priority(pid: int, nice: int) -> bool:
    """Give a process that leads its own session a lower CPU priority; whether it took effect.

    Where the kernel schedules by session (autogroup), a session weighs against the others by its
    autogroup's nice value, whatever its processes' own; elsewhere the process's own counts. Both
    are set: the one that does not apply changes nothing. Raising a nice value needs no privilege.
    """
    done = False
    try:
        Path(f"/proc/{pid}/autogroup").write_text(f"{nice}\n")
        done = True
    except OSError as exc:  # no autogroup scheduling here, or not allowed
        log.debug("autogroup of %d left as it is: %s", pid, exc)
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
        done = True
    except OSError as exc:
        log.debug("priority of %d left as it is: %s", pid, exc)
    return done


class StartError(RuntimeError):
    """A service could not be started: it exited, or was not ready in time (its log says why)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one service answers."""

    service: str
    grpc: str
    metrics_port: int


@dataclass
class Child:
    """One supervised service process."""

    endpoint: Endpoint
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0  # in a row, each within STEADY_S of its start
    pumps: list[asyncio.Task[None]] = field(default_factory=list)
    started_at: float = 0.0  # the event loop's time of its last start


class Supervisor:
    """Starts, watches and stops the services of one deployment."""

    def __init__(
        self,
        run_dir: Path,
        env: dict[str, str],
        *,
        services: tuple[str, ...] = SERVICES,
        on_line: Callable[[str, str], None] | None = None,
        backoff: Backoff | None = None,
        preferred_ports: dict[str, tuple[int, int]] | None = None,
        steady_s: float = STEADY_S,
        service_env: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """`env` is every service's environment; `service_env` adds to one service's (its own
        NATS user's URL, say)."""
        self.run_dir = run_dir
        self.service_env = service_env or {}
        self.steady_s = steady_s
        self.env = env
        self.services = services
        self.on_line = on_line or (lambda service, line: None)
        # Where the supervisor says something of the services: the launcher's terminal, or this
        # module's log (a service's own lines go to on_line only).
        self._say: Callable[[str], None] = (
            (lambda line: on_line("supervisor", line)) if on_line else (lambda line: log.warning("%s", line))
        )
        self.backoff = backoff or Backoff(first_s=0.5, cap_s=10.0)
        ports = preferred_ports or {}
        self.children = {
            name: Child(
                Endpoint(
                    name, f"127.0.0.1:{_port(ports.get(name, (0, 0))[0])}", _port(ports.get(name, (0, 0))[1])
                )
            )
            for name in services
        }
        self._stopping = False
        self._watcher: asyncio.Task[None] | None = None
        raw = env.get("A4CO_BACKGROUND_NICE", str(BACKGROUND_NICE))
        if not (raw.isdigit() and int(raw) <= 19):
            raise ValueError(f"A4CO_BACKGROUND_NICE must be a whole number from 0 to 19, not {raw!r}")
        self.background_nice = int(raw)

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        """Every service's addresses."""
        return {name: child.endpoint for name, child in self.children.items()}

    def _env_for(self, name: str) -> dict[str, str]:
        env = {**self.env, **self.service_env.get(name, {})}
        if name != "identity" and "identity" in self.children:
            # Asked whether a session has ended while Redis fails (decision 34).
            env["A4CO_PEER_IDENTITY"] = self.children["identity"].endpoint.grpc
        if name == "orders":
            for peer in PEERS_OF_ORDERS:
                if peer in self.children:
                    env[f"A4CO_PEER_{peer.upper()}"] = self.children[peer].endpoint.grpc
        return env

    async def _spawn(self, name: str) -> None:
        child = self.children[name]
        ready = self.run_dir / f"{name}.ready.json"
        ready.unlink(missing_ok=True)
        # Each service in its own session (its own autogroup: decision 23), ended with its
        # supervisor however that goes (a launcher killed, or stopped by a closed terminal).
        child.process = await asyncio.create_subprocess_exec(
            *with_parent_death_signal([
                sys.executable, "-m", f"services.{name}",
                "--grpc-address", child.endpoint.grpc,
                "--metrics-port", str(child.endpoint.metrics_port),
                "--ready-file", str(ready),
            ]),
            env=self._env_for(name), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        child.started_at = asyncio.get_running_loop().time()
        child.pumps = [asyncio.create_task(self._pump(name, child.process))]
        nice = self.background_nice
        if name in BACKGROUND and nice and not lower_priority(child.process.pid, nice):
            self._say(f"{name} runs at the same CPU priority as the other services")

    async def _pump(self, name: str, process: asyncio.subprocess.Process) -> None:
        """Copy a service's output to its log file as it comes, and show it line by line."""
        assert process.stdout is not None
        partial = b""
        with (self.run_dir / f"{name}.log").open("ab") as logfile:
            # Whatever the service has written so far, in one piece: one write and one flush
            # for a burst of lines, and `tail -f` on the file sees each line as it is written.
            while chunk := await process.stdout.read(1 << 16):
                logfile.write(chunk)
                logfile.flush()
                *lines, partial = (partial + chunk).split(b"\n")
                for raw in lines:
                    self.on_line(name, raw.decode(errors="replace").rstrip())
        if partial:
            self.on_line(name, partial.decode(errors="replace").rstrip())

    async def _wait_ready(self, name: str, timeout: float) -> None:
        ready = self.run_dir / f"{name}.ready.json"
        child = self.children[name]
        deadline = asyncio.get_running_loop().time() + timeout
        moved = 0
        while not ready.exists():
            if child.process is not None and child.process.returncode is not None:
                if child.process.returncode == EXIT_CANNOT_LISTEN and moved < LISTEN_ATTEMPTS:
                    # A port was free when chosen, then taken (another process's outgoing
                    # connection can get any port of the ephemeral range): other ones, for gRPC
                    # and metrics both (its log says which it could not bind).
                    moved += 1
                    before = child.endpoint
                    child.endpoint = replace(
                        before, grpc=f"127.0.0.1:{free_port()}", metrics_port=free_port()
                    )
                    self.on_line(
                        "supervisor",
                        f"{name} could not listen on {before.grpc} (metrics {before.metrics_port});"
                        f" using {child.endpoint.grpc} (metrics {child.endpoint.metrics_port})",
                    )
                    await self._spawn(name)
                    continue
                raise StartError(
                    f"{name} exited with {child.process.returncode}; see {self.run_dir / name}.log"
                )
            if asyncio.get_running_loop().time() > deadline:
                raise StartError(f"{name} not ready after {timeout:.0f} s; see {self.run_dir / name}.log")
            await asyncio.sleep(0.05)  # polling the ready file, bounded by the deadline above

    async def start(self, timeout: float = 60.0) -> dict[str, Endpoint]:
        """Start every service (orders after its peers are ready) and watch them."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        first = [n for n in self.services if n != "orders"]
        try:
            for name in first:
                await self._spawn(name)
            waits = [asyncio.create_task(self._wait_ready(n, timeout)) for n in first]
            try:
                await asyncio.gather(*waits)
            finally:
                for wait in waits:
                    wait.cancel()
            if "orders" in self.children:
                await self._spawn("orders")
                await self._wait_ready("orders", timeout)
        except BaseException:
            # A service that cannot start must not leave the others running with no one to stop them.
            await self.stop()
            raise
        (self.run_dir / "addresses.json").write_text(
            json.dumps({n: asdict(e) for n, e in self.endpoints.items()}, indent=2)
        )
        self._watcher = asyncio.create_task(self._watch())
        return self.endpoints

    async def _watch(self) -> None:
        """Restart a service that died, after a backoff that grows with its restarts."""
        while not self._stopping:
            for name, child in self.children.items():
                process = child.process
                if process is None or process.returncode is None or self._stopping:
                    continue
                ran_s = asyncio.get_running_loop().time() - child.started_at
                child.restarts = restarts_in_a_row(child.restarts, ran_s, self.steady_s)
                delay = self.backoff.delay(child.restarts)
                said = f"{name} exited ({process.returncode}); restarting in {delay:.1f} s"
                self._say(f"{said} (start {child.restarts} in a row)")
                child.process = None
                await asyncio.sleep(delay)  # the restart backoff itself
                if not self._stopping:
                    await self._spawn(name)
            await asyncio.sleep(0.2)  # how often crashed children are looked for

    def pid(self, name: str) -> int | None:
        """A running service's process id."""
        process = self.children[name].process
        return process.pid if process is not None and process.returncode is None else None

    async def wait_ready(self, name: str, timeout: float = 60.0) -> None:
        """Wait until a (re)started service reports ready again."""
        await self._wait_ready(name, timeout)

    async def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM every service (orders first), wait, then SIGKILL what is left."""
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        order = ["orders", *[n for n in reversed(self.services) if n != "orders"]]
        for name in order:
            process = self.children[name].process if name in self.children else None
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for name in order:
            process = self.children[name].process if name in self.children else None
            if process is None:
                continue
            try:
                async with asyncio.timeout(grace_s):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        for child in self.children.values():
            for pump in child.pumps:
                pump.cancel()
