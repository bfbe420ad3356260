"""A Prometheus metric's label children, each looked up once.

`metric.labels(...)` takes a lock and builds a key on every call; on a hot path (every call,
every event) the child is looked up once and kept.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)


class Children(Generic[M]):
    """`children(*values)`: the child of `metric` for `fixed` followed by `values`."""

    def __init__(self, metric: M, *fixed: str) -> None:
        self._metric, self._fixed = metric, fixed
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*self._fixed, *values)
        return child
