"""Values kept in a process's memory, each with the moment it was kept: the least recently used
leave first once `size` are kept. A reader asks for a value no older than it may use (`max_age_s`):
what changes rarely and may be changed by another replica (orders' products, a payment method
that may be deleted) is read again once that old; what never changes (a method's token) is read
at any age."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Kept(Generic[K, V]):
    """At most `size` values by key; `size` 0 keeps nothing."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: K, max_age_s: float | None = None) -> V | None:
        """The value kept under `key`, now the most recently used; None when none is, or when it
        was kept more than `max_age_s` seconds ago."""
        entry = self._values.get(key)
        if entry is None:
            return None
        value, kept_at = entry
        if max_age_s is not None and kept_at < time.monotonic() - max_age_s:
            return None
        self._values.move_to_end(key)
        return value

    def keep(self, key: K, value: V) -> None:
        """Keep `value` (a value kept already under `key` stays: both are the same)."""
        if not self.size:
            return
        if key not in self._values:
            self._values[key] = (value, time.monotonic())
        self._values.move_to_end(key)
        while len(self._values) > self.size:
            self._values.popitem(last=False)

    def renew(self, key: K, value: V) -> None:
        """Keep `value`, read now, in place of what is kept under `key`."""
        self.forget(key)
        self.keep(key, value)

    def forget(self, key: K) -> None:
        """Keep nothing under `key` any more."""
        self._values.pop(key, None)
