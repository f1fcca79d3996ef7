"""Runtime state several authmw processes must share, behind one protocol: the replay window, the sliding windows
of the login and security-token limits, and change notices.

:class:`LocalState` keeps it in the process (the default: right for one process, wrong for several, where a
request replayed to another process would be accepted and every limit would multiply by the process count);
:mod:`authmw.store.redisstate` keeps it in Redis (the edge). Both answer the same questions the same way, so the
verifier, the token endpoints and the caches never know which one they hold.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from math import ceil
from typing import Protocol

from authmw.errors import ConfigurationError
from authmw.signing.replay import ReplayGuard

__all__ = ["Limit", "LocalState", "LocalWindows", "Notices", "SharedState", "Windows"]

#: A sliding window's key and the events it admits within the window.
Limit = tuple[str, int]


class Windows(Protocol):
    """Sliding windows of events per key (failed logins per user, security tokens minted per caller, ...).

    An attempt is *reserved* first, against every key it counts for at once, and settled when it ends: attempts in
    flight count as events until then, so concurrent attempts cannot all pass the check.
    """

    def reserve(self, limits: Sequence[Limit], window: float) -> int:
        """Atomically: 0, and one attempt in flight on each key, if every key holds fewer than its limit of events
        and attempts in flight within the last ``window`` seconds; else the seconds until one would be admitted
        (nothing counted)."""

    def waiting(self, limits: Sequence[Limit], window: float) -> int:
        """What :meth:`reserve` would answer, without reserving."""

    def secret(self, name: str) -> bytes:
        """16 random bytes named ``name``, made once and the same for everyone sharing these windows (a hash key)."""

    def settle(self, keys: Sequence[str], window: float, *, count: bool, forget: str | None = None) -> None:
        """End an attempt reserved on ``keys``: it becomes an event if ``count``; ``forget`` (one of them) drops
        that key's events (a successful login forgives the user's failures)."""


class Notices(Protocol):
    """Change notices: a store write publishes the new revision; every subscriber hears it at once."""

    def publish(self, revision: int) -> None:
        """Tell every process the store moved to ``revision`` (best effort: polling is the fallback)."""

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on each notice (from another thread; it reads the revision itself), while the
        callback's object lives: a bound method is held weakly, so a cache dropped by a reload stops hearing."""


class SharedState(Windows, Notices, Protocol):
    """All the state authmw shares across processes. ``remember`` is the replay window of
    :class:`~authmw.signing.verifier.ReplayGuardLike`; ``describe`` names it for logs (never a password)."""

    def remember(self, fingerprint: bytes, until: float, owner: str) -> None: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


class _Counter:
    __slots__ = ("events", "pending")

    def __init__(self, limit: int) -> None:
        self.events: deque[float] = deque(maxlen=limit)
        self.pending = 0


class LocalWindows:
    """:class:`Windows` in the process: at most ``max_keys`` keys, least recently used forgotten first (never one
    with an attempt in flight). Thread-safe (attempts are settled in worker threads); the clock is injected."""

    def __init__(self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        if max_keys < 1:
            raise ConfigurationError("max_keys must be positive")
        self._max_keys, self._clock = max_keys, clock
        self._counters: OrderedDict[str, _Counter] = OrderedDict()
        self._secrets: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def reserve(self, limits: Sequence[Limit], window: float) -> int:
        with self._lock:
            wait = self._waiting(limits, window)
            if not wait:
                for key, limit in limits:
                    self._counter(key, limit).pending += 1
            return wait

    def waiting(self, limits: Sequence[Limit], window: float) -> int:
        with self._lock:
            return self._waiting(limits, window)

    def settle(self, keys: Sequence[str], window: float, *, count: bool, forget: str | None = None) -> None:  # noqa: ARG002 - events leave the window when read
        with self._lock:
            now = self._clock()
            for key in keys:
                counter = self._counters.get(key)
                if counter is None:
                    continue
                counter.pending = max(0, counter.pending - 1)
                if count:
                    counter.events.append(now)
            forgotten = None if forget is None else self._counters.get(forget)
            if forgotten is not None:
                forgotten.events.clear()
                if not forgotten.pending:
                    del self._counters[forget]  # type: ignore[arg-type]

    def secret(self, name: str) -> bytes:
        with self._lock:
            return self._secrets.setdefault(name, os.urandom(16))

    def _waiting(self, limits: Sequence[Limit], window: float) -> int:
        now, wait = self._clock(), 0
        for key, limit in limits:
            counter = self._counters.get(key)
            if counter is None:
                continue
            events = counter.events
            while events and events[0] <= now - window:
                events.popleft()
            if len(events) + counter.pending < limit:
                continue
            # Attempts in flight may still not count: ask again shortly.
            wait = max(wait, 1 if len(events) < limit else max(1, ceil(events[-limit] + window - now)))
        return wait

    def _counter(self, key: str, limit: int) -> _Counter:
        counters = self._counters
        counter = counters.get(key)
        if counter is not None:
            counters.move_to_end(key)
            return counter
        for _ in range(len(counters) - self._max_keys + 1):
            oldest, forgotten = counters.popitem(last=False)
            if forgotten.pending:
                counters[oldest] = forgotten
        counter = counters[key] = _Counter(limit)
        return counter


class LocalState(LocalWindows):
    """:class:`SharedState` kept in the process: an in-memory :class:`~authmw.signing.replay.ReplayGuard`,
    :class:`LocalWindows`, and notices heard by this process only."""

    def __init__(
        self,
        *,
        replay: ReplayGuard | None = None,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(max_keys=max_keys, clock=clock)
        self.replay = replay if replay is not None else ReplayGuard()
        self._listeners = Listeners()

    def remember(self, fingerprint: bytes, until: float, owner: str) -> None:
        self.replay.remember(fingerprint, until, owner)

    def publish(self, revision: int) -> None:  # noqa: ARG002 - one process: its listeners read the store
        self._listeners.notify()

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._listeners.add(callback)

    def describe(self) -> str:
        return "in-process"

    def close(self) -> None:
        pass


class Listeners:
    """Callbacks held weakly when they are bound methods (their object's life decides), strongly otherwise."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], Callable[[], None] | None]] = []

    def add(self, callback: Callable[[], None]) -> None:
        bound = hasattr(callback, "__self__")
        ref: Callable[[], Callable[[], None] | None] = weakref.WeakMethod(callback) if bound else lambda: callback
        with self._lock:
            self._callbacks.append(ref)

    def notify(self) -> None:
        with self._lock:
            live = [(ref, ref()) for ref in self._callbacks]
            self._callbacks = [ref for ref, callback in live if callback is not None]
        for _ref, callback in live:
            if callback is not None:
                callback()
