"""`a4co trace` names the trace of a flow by the id in its events' W3C `traceparent`."""

from __future__ import annotations

import pytest

from services.cli.trace import trace_id_of


@pytest.mark.parametrize(
    ("traceparent", "trace_id"),
    [
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("", ""),  # a call that came without one, where no service exports traces
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""),  # invalid by the standard
        ("not a traceparent", ""),
    ],
)
def test_the_trace_id_is_read_from_a_traceparent(traceparent: str, trace_id: str) -> None:
    assert trace_id_of(traceparent) == trace_id
