"""The processes a test started, found from /proc (Linux), to check none outlives it."""

from __future__ import annotations

import os
from pathlib import Path


def processes_using(path: Path, also: str = "") -> list[int]:
    """Processes whose command line mentions `path` (servers and services of that data directory),
    and `also`. Each command line is read once: a process may exit between the listing and the read."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(path) in cmdline and also in cmdline:
                found.append(int(entry.name))
    return found
