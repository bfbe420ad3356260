"""How a service process uses glibc's allocator: few arenas, and freed heap given back.

glibc gives each new thread an arena of its own, up to eight per core. Memory freed in one of
them stays with it, split among the blocks still in use, so a process whose threads did some
heavy work once (the catalog's search index, built by Tantivy's threads) keeps that memory for
good. Two arenas (the main thread's and one for every other thread) kept the catalog holding
100,000 products 8.5 MB lower on average (103.5 against 112.0 MB, four runs each;
docs/performance-history.md); the services have few threads and little contention on the
allocator. An operator's `MALLOC_ARENA_MAX` still wins.

Anything but glibc (musl, macOS): the two allocator functions do nothing.

Python's own collector: a full collection walks every object it tracks, and a started service
tracks about 70,000 (its modules, classes, functions, descriptors), which took the catalog 35-53 ms
of CPU each time, every 3 to 8 s while it was seeded and searched, with no call answered meanwhile.
Once a service is ready, `freeze_start_up_objects` sets them aside; full collections then took 1-5
ms of CPU (docs/performance-history.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os

ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter, from glibc's malloc.h


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError, TypeError):  # not glibc
        return None


_LIBC = _libc()


def cap_arenas(count: int = ARENAS) -> bool:
    """Let the threads created from now on share `count` arenas; True when set.

    Call it first thing in a process: threads that already allocated keep their arenas.
    """
    if _LIBC is None or "MALLOC_ARENA_MAX" in os.environ:  # glibc applied the operator's own
        return False
    return bool(_LIBC.mallopt(_M_ARENA_MAX, count))


def release_memory() -> None:
    """Give back to the system the free pages of every arena, after work that freed a lot."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def freeze_start_up_objects() -> None:
    """Keep every object alive now out of all later collections (`gc.freeze`), after collecting
    the start-up's garbage, so that only what lives on is set aside. Call it once, when ready."""
    gc.collect()
    gc.freeze()
