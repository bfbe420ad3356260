"""Keep the servers `make run` started running: one that exits is started again on its port and
data, after a backoff that grows with its restarts, as the supervisor does for the services.

The services ride out the gap (they reconnect to NATS, PostgreSQL and Redis, and an event
committed meanwhile waits in its outbox); a NATS cluster's server comes back as a follower and
catches up on the streams it keeps. A deployment's own servers are kept by whatever runs them
(systemd, Kubernetes); servers named by the environment are not watched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from services.launcher.supervisor import STEADY_S, restarts_in_a_row
from services.platform.local_servers import ManagedServer, ServerError
from services.platform.resilience import Backoff

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often each server is looked at


class ServerKeeper:
    """Watches the servers and starts again the ones that stopped without being asked to. Run it
    as a task of the launcher's event loop (servers started from another thread would be stopped
    when it ends) and cancel it before stopping the servers."""

    def __init__(
        self,
        servers: Iterable[ManagedServer],
        *,
        on_line: Callable[[str, str], None] | None = None,
        backoff: Backoff | None = None,
        steady_s: float = STEADY_S,
    ) -> None:
        self.servers = list(servers)
        # Where a restart is said: the launcher's terminal, or this module's log.
        self.on_line = on_line or (lambda source, line: log.warning("%s", line))
        self.backoff = backoff or Backoff(first_s=0.5, cap_s=10.0)
        self.steady_s = steady_s
        # Starts in a row of each server, each within `steady_s` of the one before.
        self.restarts = dict.fromkeys((server.name for server in self.servers), 0)

    async def run(self) -> None:
        """Keep every server running until cancelled."""
        async with asyncio.TaskGroup() as group:
            for server in self.servers:
                group.create_task(self._keep(server))

    async def _keep(self, server: ManagedServer) -> None:
        loop = asyncio.get_running_loop()
        started_at = loop.time()  # running when the keeper starts: started by the launcher
        while True:
            if server.running:
                await asyncio.sleep(POLL_S)
                continue
            code = server.returncode
            ran_s = loop.time() - started_at
            self.restarts[server.name] = restarts_in_a_row(self.restarts[server.name], ran_s, self.steady_s)
            delay = self.backoff.delay(self.restarts[server.name])
            why = f"exited ({code})" if code is not None else "is not running"
            self.on_line(
                "supervisor",
                f"{server.name} {why}; starting it again in {delay:.1f} s"
                f" (start {self.restarts[server.name]} in a row)",
            )
            await asyncio.sleep(delay)  # the restart backoff itself
            started_at = loop.time()
            try:
                await server.start_again()
            except (ServerError, OSError) as exc:  # OSError: it could not even be run
                first = str(exc).splitlines()[0]
                log.debug("%s did not start again: %s", server.name, exc)  # with its log's tail
                self.on_line("supervisor", f"{server.name} did not start again: {first}")
                continue
            self.on_line(
                "supervisor", f"{server.name} running again on port {server.port} (pid {server.pid})"
            )
