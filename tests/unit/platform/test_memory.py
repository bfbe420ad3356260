"""The allocator settings every service process starts with (services/platform/memory.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from services.platform import memory

# Four threads allocate at once, then glibc prints one "Arena N:" block per arena to stderr.
THREADS = """
import ctypes, sys, threading
from services.platform import memory
print(memory.cap_arenas(int(sys.argv[1])) if sys.argv[1] != "0" else None, flush=True)
start, done = threading.Barrier(4), []
def work():
    start.wait()
    done.append([bytearray(100_000) for _ in range(20)])
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL(None).malloc_stats()
"""


def arenas(cap: int, **env: str) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", THREADS, str(cap)],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env,
        timeout=60,
    )
    return done.stdout.strip(), done.stderr.count("Arena ")


pytestmark = pytest.mark.skipif(
    memory._LIBC is None or not sys.platform.startswith("linux"), reason="glibc's allocator only"
)


def test_threads_share_the_capped_arenas() -> None:
    assert arenas(0)[1] > 2  # glibc's default: an arena per thread, up to 8 per core
    assert arenas(2) == ("True", 2)


def test_an_operators_malloc_arena_max_stands() -> None:
    printed, count = arenas(1, MALLOC_ARENA_MAX="3")
    assert printed == "False"
    assert count == 3


FREEZE = """
import gc, weakref
from services.platform import memory
class Node: pass
a, b = Node(), Node()
a.other, b.other = b, a  # garbage only a collection finds
dead = weakref.ref(a)
del a, b
before = len(gc.get_objects())
memory.freeze_start_up_objects()
print(dead() is None, before, len(gc.get_objects()), gc.get_freeze_count())
"""


def test_start_up_objects_are_frozen_after_their_garbage_is_collected() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FREEZE], capture_output=True, text=True, check=True, timeout=60
    )
    collected, before, after, frozen = done.stdout.split()
    assert collected == "True"  # the cycle was collected, not frozen
    assert int(frozen) > 0
    assert int(after) < int(before) // 10  # later full collections walk only what came since
