"""The demo loader's marker: a data directory that has the demo is not loaded again."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from services.launcher import demo


async def test_a_data_directory_with_the_demo_is_not_loaded_again(tmp_path: Path) -> None:
    accounts = demo.DemoAccounts("ana@demo.a4co.es", demo.DEMO_PASSWORD, "c-1", "pm-1")
    (tmp_path / "demo.json").write_text(json.dumps(dataclasses.asdict(accounts)))
    # No address for any service: loading would fail at its first channel.
    assert await demo.load({}, tmp_path) == accounts
