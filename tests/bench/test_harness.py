"""The benchmark's readings of /proc: CPU and time waiting for a core, per process tree."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from bench.harness import cpu_and_waits, cpu_seconds, main_threads, progress_bar
from bench.saga_bench import Step
from tests.support.waiting import eventually

SPIN = "while True: pass"


def core_waits(named: dict[str, int]) -> dict[str, float] | None:
    """The seconds each named process tree has waited for a core so far (`cpu_and_waits`)."""
    return cpu_and_waits(named)[1]


@pytest.mark.skipif(not Path("/proc/self/schedstat").exists(), reason="no scheduler statistics")
async def test_three_spinning_children_on_two_cores_wait_and_count_for_their_parent() -> None:
    spinners = " & ".join(f"{sys.executable} -c '{SPIN}'" for _ in range(3))
    parent = await asyncio.create_subprocess_exec("sh", "-c", f"{spinners} & wait", start_new_session=True)
    try:
        named = {"spinners": parent.pid}
        before = core_waits(named)
        assert before is not None
        # Three busy processes and this one on two cores: some of them are always waiting.
        await eventually(
            lambda: (now := core_waits(named)) is not None and now["spinners"] > before["spinners"] + 0.05,
            what="the spinners waited for a core",
        )
        assert cpu_seconds(named)["spinners"] > 0
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # the shell and its spinners: one session
        await parent.wait()


def test_the_threads_waiting_on_average_over_a_step() -> None:
    step = Step(200, 2000, 2000, 198.0, 300.0, 800.0, waited_ms_per_order={"a": 2.0, "b": 3.0}, window_s=10.0)
    # 5 ms per order for 2,000 orders is 10 s of waiting over a 10 s step.
    assert step.threads_waiting == pytest.approx(1.0)
    assert Step(200, 2000, 2000, 198.0, 300.0, 800.0).threads_waiting is None


def test_the_main_thread_s_own_cpu_is_read() -> None:
    before = main_threads({"me": os.getpid(), "gone": 2**22 + 1})
    assert set(before) == {"me"}, "a process that is not there gives no entry"
    started = time.thread_time()
    while time.thread_time() - started < 0.1:  # this thread's own CPU, not a wait
        pass
    ran = main_threads({"me": os.getpid()})["me"][0] - before["me"][0]
    assert ran >= 0.05
    assert main_threads({"me": os.getpid()})["me"][1] >= before["me"][1]


def test_the_progress_bar_counts_a_step_done_when_the_next_starts_and_the_last_on_leaving() -> None:
    screen = io.StringIO()
    console = Console(file=screen, width=120, force_terminal=True, color_system=None)
    with progress_bar(console, 3) as step:
        step("seeding")
        on_first = screen.getvalue()
        step("measuring")
        on_second = screen.getvalue()
        step("writing")
    shown = screen.getvalue()
    # Each step is logged as it starts, in order, and the bar is drawn at once with it.
    assert shown.index("seeding") < shown.index("measuring") < shown.index("writing")
    assert " 0/3 0:00:00 seeding" in on_first
    assert " 1/3 0:00:00 measuring" in on_second[len(on_first) :]
    assert "writing" not in on_second
    # Leaving the block counts the last step done.
    assert " 3/3 0:00:00 writing" in shown[len(on_second) :]


def test_a_progress_bar_left_early_shows_the_steps_that_started() -> None:
    screen = io.StringIO()
    with progress_bar(Console(file=screen, width=120), 4) as step:
        step("one")
        step("two")
    assert " 2/4 " in screen.getvalue().splitlines()[-1]
