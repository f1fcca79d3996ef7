"""An in-memory, bounded replay guard for signed requests, with a quota per key owner."""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

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
        self._live: set[bytes] = set()
        # expiry second → owner → fingerprints: an owner's count drops by a list's length as its second passes.
        self._expiring: dict[int, dict[str, list[bytes]]] = {}
        self._seconds: list[int] = []  # a heap of the keys of _expiring
        self._held: dict[str, int] = {}  # owner → live fingerprints

    def __len__(self) -> int:
        return len(self._live)

    def held_by(self, owner: str) -> int:
        """How many live requests ``owner`` holds."""
        return self._held.get(owner, 0)

    def resize(self, *, capacity: int, quota: int) -> None:
        """New limits for the requests to come (those held are kept, even beyond them, until they expire)."""
        if capacity < 1 or not 1 <= quota <= capacity:
            raise ConfigurationError("replay guard capacity must be positive, and its quota 1 to the capacity")
        with self._lock:
            self.capacity, self.quota = capacity, quota

    def remember(self, fingerprint: bytes, until: float, owner: str) -> None:
        """Record ``fingerprint`` (a digest of what a verified request signed) until ``until`` (epoch seconds,
        inclusive), charged to ``owner``; raise :class:`ReplayedRequest` if it is live already,
        :class:`ReplayCacheFull` if the guard is full, :class:`ReplayQuotaExceeded` if ``owner`` holds its quota.
        A refused request is not recorded."""
        with self._lock:
            now = self._clock()
            self._sweep(now, _SWEEP_BUDGET)
            # An entry past its second but not yet swept is harmless here: a request with that fingerprint
            # carries the same date, and is refused by the skew check before it reaches the guard.
            if fingerprint in self._live:
                raise ReplayedRequest("request already accepted")
            held = self._held.get(owner, 0)
            if held >= self.quota or len(self._live) >= self.capacity:
                self._sweep(now, len(self._seconds))  # before refusing, drop everything already expired
                if len(self._live) >= self.capacity:
                    raise ReplayCacheFull(f"replay guard holds {self.capacity} live requests")
                held = self._held.get(owner, 0)
                if held >= self.quota:
                    raise ReplayQuotaExceeded(f"one owner holds its quota of {self.quota} live requests")
            second = math.ceil(until)
            owners = self._expiring.get(second)
            if owners is None:
                owners = self._expiring[second] = {}
                heapq.heappush(self._seconds, second)
            prints = owners.get(owner)
            if prints is None:
                owners[owner] = [fingerprint]
            else:
                prints.append(fingerprint)
            self._live.add(fingerprint)
            self._held[owner] = held + 1

    def _sweep(self, now: float, budget: int) -> None:
        """Forget the requests of up to ``budget`` seconds that have passed (kept through ``until`` itself)."""
        seconds, live, held = self._seconds, self._live, self._held
        while budget > 0 and seconds and seconds[0] < now:
            budget -= 1
            for owner, prints in self._expiring.pop(heapq.heappop(seconds)).items():
                live.difference_update(prints)
                left = held[owner] - len(prints)
                if left:
                    held[owner] = left
                else:
                    del held[owner]
