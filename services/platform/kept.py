"""Values kept in a process's memory: the least recently used leave first once `size` are kept.
For what never changes once stored (a tokenised payment method), so nothing kept can be stale,
whichever replica stored it; or for what changes rarely, kept with the moment it was read, and
forgotten by its reader once too old (orders' products)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Kept(Generic[K, V]):
    """At most `size` values by key; `size` 0 keeps nothing."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: K) -> V | None:
        """The value kept under `key`, now the most recently used; None when none is."""
        value = self._values.get(key)
        if value is not None:
            self._values.move_to_end(key)
        return value

    def keep(self, key: K, value: V) -> None:
        """Keep `value` (a value kept already under `key` stays: both are the same)."""
        if not self.size:
            return
        self._values.setdefault(key, value)
        self._values.move_to_end(key)
        while len(self._values) > self.size:
            self._values.popitem(last=False)

    def forget(self, key: K) -> None:
        """Keep nothing under `key` any more."""
        self._values.pop(key, None)
