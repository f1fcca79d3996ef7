"""The one bounded cache every memo in authmw uses (verified tokens, sessions, routes, decisions, store reads).

Clients choose what is looked up (tokens, paths, access keys), so every memo must be bounded; one eviction rule
serves them all: the entry put longest ago goes first. A hit is the dict's own lookup (C speed, no reordering and
no lock: the hot path reads several memos per request, and a reordering read could put back an entry a concurrent
invalidation just dropped), so a hot entry pushed out by a flood of new keys costs one recomputation per
``capacity`` insertions. Entries that expire are ``(value, deadline)`` pairs read with :meth:`BoundedCache.fresh`
against the injected ``timer``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import suppress
from typing import TypeVar

__all__ = ["BoundedCache"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")


class BoundedCache(dict[K, V]):
    """A dict of at most ``capacity`` entries: :meth:`put` of a new key when full evicts the oldest entry
    (``capacity`` 0 keeps nothing). Reads are plain dict reads; safe under threads (a racing eviction is a no-op)."""

    __slots__ = ("capacity", "timer")

    def __init__(self, capacity: int, *, timer: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if capacity < 0:
            raise ValueError("a cache's capacity cannot be negative")
        self.capacity = capacity
        self.timer = timer

    def __repr__(self) -> str:
        return f"BoundedCache({len(self)}/{self.capacity})"

    def put(self, key: K, value: V) -> None:
        """Remember ``value`` for ``key``, evicting the oldest entry if the cache is full."""
        if key not in self and len(self) >= self.capacity:
            if not self.capacity:
                return
            with suppress(KeyError, StopIteration, RuntimeError):  # raced with another thread: nothing to evict
                del self[next(iter(self))]
        self[key] = value

    def fresh(self: BoundedCache[K, tuple[T, float]], key: K) -> T | None:
        """The value of a ``(value, deadline)`` entry whose deadline ``timer()`` has not reached; a stale entry is
        dropped (None)."""
        entry = self.get(key)
        if entry is None:
            return None
        if self.timer() < entry[1]:
            return entry[0]
        self.pop(key, None)
        return None
