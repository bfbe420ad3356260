"""The launcher's output: a reader that goes away stops everything instead of killing the launcher."""

from __future__ import annotations

import os

from services.launcher.__main__ import Terminal


def test_a_closed_reader_stops_the_launcher_once_and_is_written_to_no_more() -> None:
    read, write = os.pipe()
    stream = os.fdopen(write, "w")
    stops: list[str] = []
    terminal = Terminal(lambda: stops.append("stop"), stream)
    terminal.say("a4co ready")
    assert os.read(read, 100) == b"a4co ready\n"
    os.close(read)  # `make run | head`: head has what it wanted
    terminal.say("stopping")  # no BrokenPipeError
    terminal.say("stopped")
    assert stops == ["stop"]
    assert terminal.gone
    stream.close()  # what it still held went to /dev/null
