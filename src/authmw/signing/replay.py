"""An in-memory, bounded replay guard for signed requests, with a quota per key owner."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from heapq import heappop, heappush
from math import ceil

from authmw.errors import ConfigurationError, ReplayCacheFull, ReplayedRequest, ReplayQuotaExceeded

__all__ = ["DEFAULT_CAPACITY", "ReplayGuard"]

DEFAULT_CAPACITY = 1_000_000
# Expired seconds dropped per call: bounds the work one request does after a quiet spell; a refusal sweeps all.
_SWEEP_BUDGET = 4


class ReplayGuard:
    """Remembers each accepted request until it could no longer pass the clock-skew check.

    When ``capacity`` requests are remembered it refuses new requests (503 ``replay_cache_full``) instead of
    forgetting old ones: forgetting would silently reopen the replay window. Size it for
    ``requests/s × (max_skew + 1)`` (about 100 bytes a request). So that one caller cannot fill it and refuse
    everyone, each owner (the user behind an access key, see :meth:`remember`) holds at most ``quota`` entries
    (default a quarter of ``capacity``); beyond that only its own requests are refused (429
    ``replay_quota_exceeded``).

    Each call costs O(1) amortised plus O(log s) for s distinct expiry seconds (at most ``2 × max_skew + 2``).
    The clock and lock are injected; the default lock makes it safe for WSGI servers' threads.
    """

    def __init__(
        self,
        *,
        capacity: int = DEFAULT_CAPACITY,
        quota: int | None = None,
        clock: Callable[[], float] = time.time,
        lock: AbstractContextManager[object] | None = None,
    ) -> None:
        if capacity < 1 or (quota is not None and not 1 <= quota <= capacity):
            raise ConfigurationError("replay guard capacity must be positive, and its quota 1 to the capacity")
        self.capacity = capacity
        self.quota = max(1, capacity // 4) if quota is None else quota
        self._clock = clock
        self._lock = lock if lock is not None else threading.Lock()
        # expiry second → fingerprint → owner. A replay carries the same date, so it lands in the same second:
        # one small dict answers "seen?" and, as the second passes, whose counts to lower.
        self._expiring: dict[int, dict[bytes, str]] = {}
        self._seconds: list[int] = []  # a heap of the keys of _expiring
        self._held: dict[str, int] = {}  # owner → live fingerprints
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def resize(self, *, capacity: int, quota: int) -> None:
        """New limits for the requests to come (those held are kept, even beyond them, until they expire)."""
        if capacity < 1 or not 1 <= quota <= capacity:
            raise ConfigurationError("replay guard capacity must be positive, and its quota 1 to the capacity")
        with self._lock:
            self.capacity, self.quota = capacity, quota

    def remember(self, fingerprint: bytes, until: float, owner: str) -> None:
        """Record ``fingerprint`` (16 bytes that identify a verified request: its MAC, or a digest of what it
        signed) until ``until`` (epoch seconds, inclusive; a replay has the same), charged to ``owner``. Raise
        :class:`ReplayedRequest` if it is live already, :class:`ReplayCacheFull` if the guard is full,
        :class:`ReplayQuotaExceeded` if ``owner`` holds its quota. A refused request is not recorded."""
        with self._lock:
            now = self._clock()
            seconds = self._seconds
            if seconds and seconds[0] < now:
                self._sweep(now, _SWEEP_BUDGET)
            second = ceil(until)
            bucket = self._expiring.get(second)
            # An entry past its second but not yet swept is harmless here: a request with that fingerprint
            # carries the same date, and is refused by the skew check before it reaches the guard.
            if bucket is not None and fingerprint in bucket:
                raise ReplayedRequest("request already accepted")
            held = self._held.get(owner, 0)
            if held >= self.quota or self._size >= self.capacity:
                self._sweep(now, len(seconds))  # before refusing, drop everything already expired
                if self._size >= self.capacity:
                    raise ReplayCacheFull(f"replay guard holds {self.capacity} live requests")
                held = self._held.get(owner, 0)
                if held >= self.quota:
                    raise ReplayQuotaExceeded(f"one owner holds its quota of {self.quota} live requests")
                bucket = self._expiring.get(second)  # the sweep may have dropped it
            if bucket is None:
                bucket = self._expiring[second] = {}
                heappush(seconds, second)
            bucket[fingerprint] = owner
            self._held[owner] = held + 1
            self._size += 1

    def shift(self, seconds: int) -> None:
        """Move every expiry by ``seconds`` (``max_skew`` changed by a reload: the same request now lands there)."""
        with self._lock:
            self._expiring = {second + seconds: bucket for second, bucket in self._expiring.items()}
            self._seconds = sorted(self._expiring)

    def _sweep(self, now: float, budget: int) -> None:
        """Forget the requests of up to ``budget`` seconds that have passed (kept through ``until`` itself)."""
        seconds, held = self._seconds, self._held
        while budget > 0 and seconds and seconds[0] < now:
            budget -= 1
            bucket = self._expiring.pop(heappop(seconds))
            self._size -= len(bucket)
            for owner, count in Counter(bucket.values()).items():
                left = held[owner] - count
                if left:
                    held[owner] = left
                else:
                    del held[owner]
