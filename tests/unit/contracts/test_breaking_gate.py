"""`buf breaking` bites: a changed field type or a removed field fails against the original."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
ORDER_EVENTS = "a4co/orders/events/v1/order_events.proto"
INVENTORY_RPC = "a4co/inventory/v1/inventory_service.proto"


def buf() -> str:
    beside_python = Path(sys.executable).parent / "buf"
    path = str(beside_python) if beside_python.exists() else shutil.which("buf")
    assert path, "the buf CLI (PyPI buf-bin) is not installed"
    return path


def breaking(tmp_path: Path, edit: Callable[[Path], None]) -> subprocess.CompletedProcess[str]:
    """Copy the module, apply `edit` to the copy, and run buf breaking against the original."""
    changed = tmp_path / "changed"
    shutil.copytree(ROOT / "proto", changed / "proto")
    (changed / "buf.yaml").write_text((ROOT / "buf.yaml").read_text())
    edit(changed / "proto")
    return subprocess.run(
        [buf(), "breaking", str(changed), "--against", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_an_unchanged_copy_passes(tmp_path: Path) -> None:
    result = breaking(tmp_path, lambda proto: None)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda p: replace(p / ORDER_EVENTS, "int32 quantity = 3;", "string quantity = 3;"),
            "changed type",
        ),
        (
            lambda p: replace(p / ORDER_EVENTS, "  string customer_id = 2;\n", ""),
            "deleted",
        ),
        (
            lambda p: replace(p / INVENTORY_RPC, "int32 delta = 3;", "int64 delta = 3;"),
            "changed type",
        ),
    ],
    ids=["field-type-changed", "field-removed", "rpc-field-type-changed"],
)
def test_an_incompatible_change_fails(tmp_path: Path, edit: Callable[[Path], None], expected: str) -> None:
    result = breaking(tmp_path, edit)
    assert result.returncode != 0
    assert expected in result.stdout.lower(), result.stdout + result.stderr
