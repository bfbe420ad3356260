"""The dlq commands print the sequences they dealt with as runs."""

from __future__ import annotations

import pytest

from services.cli.dlq import _runs


@pytest.mark.parametrize(
    ("seqs", "said"),
    [
        ([], "[]"),
        ([5], "[5]"),
        ([4, 5], "[4-5]"),
        ([1, 2, 3, 7, 9, 10], "[1-3, 7, 9-10]"),
        (list(range(1, 5001)), "[1-5000]"),
    ],
)
def test_consecutive_sequences_are_said_as_their_ends(seqs: list[int], said: str) -> None:
    assert _runs(seqs) == said
