"""The supervisor: a service that cannot start stops the ones already started; a service's log
reaches its file and the terminal as it is written."""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import socket
import sys
import urllib.request
import uuid
from pathlib import Path

import grpc
import pytest

from services.launcher.supervisor import BACKGROUND_NICE, Supervisor, lower_priority
from services.platform.local_servers import ServerUrls
from services.platform.resilience import Backoff
from tests.integration.services.harness import Keys
from tests.support.processes import communicate, processes_using
from tests.support.waiting import eventually


def service_env(urls: ServerUrls, keys: Keys, log_level: str) -> dict[str, str]:
    """What the services need, under a prefix of their own."""
    return dict(
        os.environ,
        **urls.as_env(),
        A4CO_PREFIX="l" + uuid.uuid4().hex[:10],
        A4CO_JWT_PRIVATE_KEY_FILE=str(keys.private_file),
        A4CO_JWT_PUBLIC_KEY_FILE=str(keys.public_file),
        A4CO_LOG_LEVEL=log_level,
    )


def identity_alone(
    urls: ServerUrls, keys: Keys, run_dir: Path, log_level: str
) -> tuple[Supervisor, list[str]]:
    """A supervisor of identity alone, and the lines it shows."""
    shown: list[str] = []
    supervisor = Supervisor(
        run_dir,
        service_env(urls, keys, log_level),
        services=("identity",),
        on_line=lambda _, line: shown.append(line),
    )
    return supervisor, shown


async def test_a_failed_start_leaves_no_service_running(urls: ServerUrls, keys: Keys, tmp_path: Path) -> None:
    env = service_env(urls, keys, "WARNING")
    # `services.nowhere` does not exist: its process exits at once, while identity starts.
    supervisor = Supervisor(tmp_path, env, services=("identity", "nowhere"))
    with pytest.raises(RuntimeError, match="nowhere exited"):
        await supervisor.start()
    identity = supervisor.children["identity"].process
    assert identity is not None
    assert identity.returncode is not None, "identity was left running"


async def test_the_launcher_says_which_service_could_not_start_and_where_its_log_is(
    urls: ServerUrls, keys: Keys, tmp_path: Path
) -> None:
    """`make run` with a setting every service refuses (here the event loop): one line naming the
    service, its exit status and its log, exit 1, no traceback, nothing left running."""
    env = {**service_env(urls, keys, "WARNING"), "A4CO_DATA_DIR": str(tmp_path), "A4CO_EVENT_LOOP": "trio"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.launcher", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await communicate(proc, 120)
    said = stderr.decode()
    assert proc.returncode == 1, said
    assert "Traceback" not in said
    (line,) = [line for line in said.splitlines() if line.startswith("a4co could not start: ")]
    assert " exited with 1; see " in line
    assert Path(line.rsplit("see ", 1)[1]).read_text().count("A4CO_EVENT_LOOP must be uvloop or asyncio")
    assert not processes_using(tmp_path), "a service left running"


async def test_a_services_lines_reach_its_log_file_while_it_runs(
    urls: ServerUrls, keys: Keys, tmp_path: Path
) -> None:
    supervisor, shown = identity_alone(urls, keys, tmp_path, "INFO")
    await supervisor.start()
    try:
        log_file = tmp_path / "identity.log"

        def ready_in(lines: list[str]) -> bool:
            return any(line.startswith("{") and json.loads(line)["message"] == "ready" for line in lines)

        # Not only once the service stops: an operator follows the file while it runs.
        await eventually(
            lambda: ready_in(log_file.read_text().splitlines()), what="the ready line in the file"
        )
        assert ready_in(shown)
    finally:
        await supervisor.stop()


@pytest.mark.parametrize("taken", ["grpc", "metrics"])
async def test_a_service_whose_port_was_taken_meanwhile_starts_on_another(
    urls: ServerUrls, keys: Keys, tmp_path: Path, taken: str
) -> None:
    supervisor, shown = identity_alone(urls, keys, tmp_path, "WARNING")
    chosen = supervisor.endpoints["identity"]
    port = int(chosen.grpc.rsplit(":", 1)[1]) if taken == "grpc" else chosen.metrics_port
    # Between the choice and the service's start, another socket takes the port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        await supervisor.start()
        try:
            moved = supervisor.endpoints["identity"]
            assert (moved.grpc, moved.metrics_port) != (chosen.grpc, chosen.metrics_port)
            assert (
                f"identity could not listen on {chosen.grpc} (metrics {chosen.metrics_port});"
                f" using {moved.grpc} (metrics {moved.metrics_port})"
            ) in shown
            async with grpc.aio.insecure_channel(moved.grpc) as channel:
                await asyncio.wait_for(channel.channel_ready(), 10)
            metrics = f"http://127.0.0.1:{moved.metrics_port}/metrics"
            scraped = await asyncio.to_thread(lambda: urllib.request.urlopen(metrics, timeout=10).read())
            assert b"a4co_" in scraped
        finally:
            await supervisor.stop()


# A supervisor of identity alone that dies without stopping anything, as a launcher killed with
# SIGKILL or by a closed terminal would; it prints identity's process id first.
ABANDONING = """
import asyncio, os, sys
from pathlib import Path
from services.launcher.supervisor import Supervisor

async def main():
    supervisor = Supervisor(Path(sys.argv[1]), dict(os.environ), services=("identity",))
    await supervisor.start()
    print(supervisor.children["identity"].process.pid, flush=True)
    os._exit(1)

asyncio.run(main())
"""


def running(pid: int) -> bool:
    """Whether a process exists and has not ended (a zombie waiting to be reaped has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="util-linux's setpriv is not installed")
async def test_a_service_does_not_outlive_its_supervisor(
    urls: ServerUrls, keys: Keys, tmp_path: Path
) -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ABANDONING, str(tmp_path), env=service_env(urls, keys, "WARNING"),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(parent.communicate(), 60)
    identity = int(out)
    assert parent.returncode == 1
    try:
        await eventually(lambda: not running(identity), timeout=30, what="identity ended with its supervisor")
    finally:
        if running(identity):
            os.kill(identity, signal.SIGKILL)


def autogroup_nice(pid: int) -> int | None:
    """The nice value of the autogroup a process is scheduled in ("/autogroup-N nice V").

    None where the kernel does not schedule it by session: no such file, or an empty one, as in a
    container whose tasks the CPU controller of a cgroup schedules instead (seen on CI's machine).
    """
    try:
        shown = Path(f"/proc/{pid}/autogroup").read_text().split()
    except FileNotFoundError:
        return None
    return int(shown[-1]) if shown else None


AUTOGROUPS = pytest.mark.skipif(
    autogroup_nice(os.getpid()) is None,
    reason="the kernel does not schedule this process by session (autogroup)",
)


async def test_lower_priority_lowers_the_processs_priority() -> None:
    ours = os.getpriority(os.PRIO_PROCESS, os.getpid())
    sleeper = await asyncio.create_subprocess_exec("sleep", "30", start_new_session=True)
    try:
        assert lower_priority(sleeper.pid, 7)
        assert os.getpriority(os.PRIO_PROCESS, sleeper.pid) == 7
        assert os.getpriority(os.PRIO_PROCESS, os.getpid()) == ours  # the caller keeps its own
    finally:
        sleeper.kill()
        await sleeper.wait()


@AUTOGROUPS
async def test_lower_priority_sets_the_sessions_autogroup_nice_value() -> None:
    ours = autogroup_nice(os.getpid())
    sleeper = await asyncio.create_subprocess_exec("sleep", "30", start_new_session=True)
    try:
        assert lower_priority(sleeper.pid, 7)
        assert autogroup_nice(sleeper.pid) == 7
        assert autogroup_nice(os.getpid()) == ours  # the caller's session is not touched
    finally:
        sleeper.kill()
        await sleeper.wait()


async def test_background_services_yield_the_cores_to_the_others(
    urls: ServerUrls, keys: Keys, tmp_path: Path
) -> None:
    env = service_env(urls, keys, "WARNING")
    supervisor = Supervisor(tmp_path, env, services=("identity", "notifications"))
    await supervisor.start()
    try:
        identity, notifications = supervisor.pid("identity"), supervisor.pid("notifications")
        assert identity is not None
        assert notifications is not None
        priorities = [os.getpriority(os.PRIO_PROCESS, pid) for pid in (identity, notifications)]
        assert priorities == [os.getpriority(os.PRIO_PROCESS, os.getpid()), BACKGROUND_NICE]
        if autogroup_nice(os.getpid()) is not None:  # where sessions weigh against each other
            assert (autogroup_nice(identity), autogroup_nice(notifications)) == (0, BACKGROUND_NICE)
    finally:
        await supervisor.stop()


@pytest.mark.parametrize("value", ["20", "-5", "low"])
def test_a_background_nice_value_out_of_range_is_refused(value: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="A4CO_BACKGROUND_NICE must be a whole number from 0 to 19"):
        Supervisor(tmp_path, {"A4CO_BACKGROUND_NICE": value}, services=("identity",))


@pytest.mark.parametrize(("steady_s", "restarts"), [(0.0, 1), (math.inf, 2)])
async def test_a_service_that_ran_steadily_starts_its_backoff_anew(
    urls: ServerUrls, keys: Keys, tmp_path: Path, steady_s: float, restarts: int
) -> None:
    """A service killed after it ran `steady_s` is started again after the backoff's first delay
    (its count of restarts in a row begins anew); one killed sooner counts on, and waits longer."""
    supervisor = Supervisor(
        tmp_path,
        service_env(urls, keys, "WARNING"),
        services=("identity",),
        backoff=Backoff(first_s=0.05, cap_s=0.1),
        steady_s=steady_s,
    )
    await supervisor.start()
    try:
        for _ in range(2):
            killed = supervisor.pid("identity")
            assert killed is not None
            os.kill(killed, signal.SIGKILL)

            def started_again(killed: int = killed) -> bool:
                return supervisor.pid("identity") not in (None, killed)

            await eventually(started_again, timeout=30, what="identity started again")
            await supervisor.wait_ready("identity", 60)
        assert supervisor.children["identity"].restarts == restarts
    finally:
        await supervisor.stop()
