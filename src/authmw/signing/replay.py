"""An in-memory, bounded replay guard for signed requests."""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from authmw.errors import ConfigurationError, ReplayCacheFull, ReplayedRequest

__all__ = ["ReplayGuard"]


class ReplayGuard:
    """Remembers each accepted request until it could no longer pass the clock-skew check.

    When ``capacity`` requests are remembered it refuses new requests (503) instead of forgetting old ones:
    forgetting would silently reopen the replay window. Size it for ``requests/s × 2 × skew``.
    """

    def __init__(
        self,
        *,
        capacity: int = 1_000_000,
        clock: Callable[[], float] = time.time,
        lock: AbstractContextManager[object] | None = None,
    ) -> None:
        if capacity < 1:
            raise ConfigurationError("replay guard capacity must be positive")
        self.capacity = capacity
        self._clock = clock
        self._lock = lock if lock is not None else threading.Lock()
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def remember(self, fingerprint: str, until: float) -> None:
        """Record ``fingerprint`` (of a verified request) until ``until`` (epoch seconds, inclusive); raise if
        it is live already or if the guard is full."""
        with self._lock:
            now = self._clock()
            heap, expiry = self._heap, self._expiry
            while heap and heap[0][0] < now:  # kept through ``until`` itself: no gap at the window's edge
                del expiry[heapq.heappop(heap)[1]]
            if fingerprint in expiry:
                raise ReplayedRequest("request already accepted")
            if len(expiry) >= self.capacity:
                raise ReplayCacheFull(f"replay guard holds {self.capacity} live requests")
            expiry[fingerprint] = until
            heapq.heappush(heap, (until, fingerprint))
