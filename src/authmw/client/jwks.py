"""The JWKS of external OIDC issuers, fetched over HTTP and kept fresh (edge: threads and ``httpx``).

:class:`JwksKeys` is the :class:`authmw.oidc.KeySet` that :class:`authmw.oidc.OidcIssuer` reads: every fetch runs on
a daemon thread, so verifying a token never waits for the network. Until the first fetch has succeeded (call
:meth:`JwksKeys.prime` at start-up) the set has no usable key; when the issuer cannot be reached, its last good keys
keep working for ``grace`` seconds past their expiry.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import urlsplit

from authmw.errors import ConfigurationError, InvalidToken, IssuerUnavailable
from authmw.oidc import KEY_ALGORITHMS, cache_max_age, parse_jwks
from authmw.tokens import PublicKey

__all__ = ["JwksKeys", "fetch_jwks"]

logger = logging.getLogger("authmw.oidc")

_MIN_MAX_AGE, _MAX_MAX_AGE = 60.0, 86400.0
_REFRESH_AHEAD = 0.8  # share of max-age after which the next use refreshes in the background
_MAX_BACKOFF = 30.0
_ABANDON = 60.0  # seconds after which a fetch still in flight is given up on (the default one takes ≤ ~10 s)
_MAX_JWKS = 256 * 1024  # a key set is a few KiB; a larger answer is not one
_FETCH_DEADLINE = 3.0  # seconds a fetch may take, so a dripping server cannot hold the fetch thread
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})

Fetch = Callable[[str], tuple[bytes, float | None]]


def fetch_jwks(url: str, *, deadline: float = _FETCH_DEADLINE) -> tuple[bytes, float | None]:
    """GET ``url`` (no redirects, at most 256 KiB); the body and its Cache-Control max-age.

    A body still arriving ``deadline`` seconds (3) after the request began is abandoned (checked as each chunk
    arrives); the connect and each read also time out after ``deadline`` seconds of silence. Raises for any answer
    but 200, so the caller keeps its last good keys.
    """
    import httpx  # only this default fetcher needs the client extra

    give_up = time.monotonic() + deadline
    with httpx.stream("GET", url, timeout=deadline, follow_redirects=False) as response:
        if response.status_code != 200:
            raise httpx.HTTPStatusError(
                f"JWKS answered {response.status_code}", request=response.request, response=response
            )
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > _MAX_JWKS:
                raise ValueError("JWKS too large")
            if time.monotonic() > give_up:
                raise TimeoutError("JWKS not read within the deadline")
        return bytes(body), cache_max_age(response.headers.get("cache-control", ""))


class JwksKeys:
    """The public signing keys of one issuer, fetched from its JWKS ``url`` and kept fresh.

    :meth:`check` and :meth:`key` never fetch nor wait: they start a fetch on a daemon thread (one at a time) and
    answer from the keys at hand. Keys are fresh for the answer's Cache-Control max-age (``default_max_age``
    without one; always within 60 s and 24 h); from 80 % of it a use starts a refresh. With no keys yet, a use
    starts a fetch and raises :class:`IssuerUnavailable`; an unknown ``kid`` starts a refetch, at most once per
    ``min_refetch`` seconds (at least 1), and raises :class:`InvalidToken`. After a failed fetch (error, non-200,
    bad document) the issuer is not asked again for ``min(30, min_refetch)`` seconds, and the last good keys
    serve until ``grace`` seconds past their expiry, then :class:`IssuerUnavailable`. :meth:`prime` is for
    start-up: it fetches and waits.
    """

    def __init__(
        self,
        *,
        url: str,
        algorithms: Iterable[str],
        fetch: Fetch | None = None,
        min_refetch: float = 30.0,
        default_max_age: float = 300.0,
        grace: float = 3600.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.algorithms = tuple(algorithms)
        if not self.algorithms or not set(self.algorithms) <= set(KEY_ALGORITHMS):
            raise ConfigurationError(f"JWKS algorithms must be among {', '.join(KEY_ALGORITHMS)}")
        parts = urlsplit(url)
        if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in _LOOPBACK):
            raise ConfigurationError("a JWKS URL must be https (http only on the loopback interface)")
        if not _MIN_MAX_AGE <= default_max_age <= _MAX_MAX_AGE:
            raise ConfigurationError("default_max_age must be between 60 seconds and 24 hours")
        if not min_refetch >= 1:  # NaN too: anyone can send a made-up kid, so each one must not reach the issuer
            raise ConfigurationError("min_refetch must be at least 1 second")
        if not grace >= 0:
            raise ConfigurationError("grace cannot be negative")
        self.url, self.min_refetch, self.default_max_age, self.grace = url, min_refetch, default_max_age, grace
        self._fetch = fetch if fetch is not None else fetch_jwks
        self._timer = timer
        self._backoff = min(_MAX_BACKOFF, min_refetch)
        self._lock = threading.Lock()  # guards the state below; never held during a fetch
        # Replaced whole, never mutated, so readers need no lock.
        self._keys: Mapping[str, tuple[str, PublicKey]] = {}
        never = float("-inf")
        self._refresh_at = self._usable_until = never
        self._retry_at = never  # after a failed fetch: the issuer is not asked again before this
        self._unknown_at = never  # the last refetch started by an unknown kid
        self._fetching: threading.Event | None = None  # the fetch in flight, set when it has ended
        self._fetch_started = never  # when it began: one older than _ABANDON is given up on
        self._installed = never  # when the fetch whose keys are installed began
        self._due = never  # before this instant check() has nothing to do

    def __repr__(self) -> str:
        return f"JwksKeys(url={self.url!r}, algorithms={self.algorithms!r})"

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def check(self) -> None:
        """Raise :class:`IssuerUnavailable` if no keys are usable; start a fetch in the background when one is due."""
        now = self._timer()
        if now < self._due:  # the common case: one call and one comparison
            return
        with self._lock:
            fetch = self._idle(now) and now >= max(self._refresh_at, self._retry_at)
            done = self._begin() if fetch else None
            usable = now < self._usable_until
        if done is not None:
            self._launch(done)
        if not usable:
            raise IssuerUnavailable("the issuer's signing keys cannot be fetched")

    def key(self, kid: str) -> tuple[str, PublicKey]:
        """The algorithm and public key of ``kid``; :class:`InvalidToken` if the issuer has no such key (a refetch
        may start in the background), :class:`IssuerUnavailable` if no keys are usable."""
        self.check()
        found = self._keys.get(kid)
        if found is not None:
            return found
        with self._lock:
            # Per key set, not per kid, so a stream of made-up kids cannot hammer the issuer. A fetch in flight
            # (perhaps started by check() above) may bring the kid: no second one.
            now = self._timer()
            done = None
            if self._idle(now) and now >= self._retry_at and now - self._unknown_at >= self.min_refetch:
                self._unknown_at = now
                done = self._begin()
        if done is not None:
            self._launch(done)
        raise InvalidToken("unknown signing key")

    def prime(self, timeout: float = 5.0) -> bool:
        """For start-up, never the request path: unless fresh keys are installed, fetch now (or join the fetch in
        flight) and wait for it at most ``timeout`` seconds; whether usable keys are installed. A failed fetch is
        logged, not raised."""
        with self._lock:
            if self._timer() < self._refresh_at:
                return True
            done = None if self._idle(self._timer()) else self._fetching
            fetch = done is None
            if done is None:
                done = self._begin()
        if fetch:
            self._launch(done)
        done.wait(max(timeout, 0.0))
        return self._timer() < self._usable_until

    def _idle(self, now: float) -> bool:
        """No fetch in flight (lock held); one stuck for longer than ``_ABANDON`` (a server dripping its headers,
        an injected fetch that hangs) no longer counts, so refreshes go on."""
        return self._fetching is None or now - self._fetch_started > _ABANDON

    def _begin(self) -> threading.Event:
        """Mark a fetch in flight (lock held); :meth:`_launch` starts it."""
        done = self._fetching = threading.Event()
        self._fetch_started = self._timer()
        self._reschedule()
        return done

    def _launch(self, done: threading.Event) -> None:
        try:
            thread = threading.Thread(target=self._run, args=(done,), name=f"authmw-jwks-fetch {self.url}", daemon=True)
            thread.start()
        except RuntimeError as exc:  # no thread to be had: a failed fetch, or no fetch would ever start again
            self._failed(exc)
            self._end(done)

    def _run(self, done: threading.Event) -> None:
        try:
            self._load()
        finally:
            self._end(done)

    def _end(self, done: threading.Event) -> None:
        with self._lock:
            if self._fetching is done:  # not a newer fetch that replaced an abandoned one
                self._fetching = None
            self._reschedule()
        done.set()

    def _load(self) -> None:
        """Fetch and install the key set; if the issuer failed, log it and keep the last good keys."""
        started = self._timer()
        try:
            body, max_age = self._fetch(self.url)
            keys = parse_jwks(body, self.algorithms)
            if not keys:
                raise ValueError("no usable key")  # more likely a broken answer than an issuer with no keys
        except Exception as exc:
            self._failed(exc)
            return
        if max_age is None or not math.isfinite(max_age):
            max_age = self.default_max_age
        max_age = min(max(max_age, _MIN_MAX_AGE), _MAX_MAX_AGE)
        with self._lock:
            if started < self._installed:  # an abandoned fetch ending after a newer one: keep the newer keys
                return
            self._keys, self._installed = keys, started
            self._refresh_at = started + _REFRESH_AHEAD * max_age
            self._usable_until = started + max_age + self.grace
            self._retry_at = float("-inf")
            self._reschedule()

    def _failed(self, exc: Exception) -> None:
        logger.warning("fetching the JWKS at %s failed: %s", self.url, type(exc).__name__)
        with self._lock:
            self._retry_at = self._timer() + self._backoff
            self._reschedule()

    def _reschedule(self) -> None:
        """The next instant :meth:`check` must act (lock held): start a fetch, or refuse once grace is over."""
        if self._fetching is not None:  # act again when grace ends or the fetch is given up on
            self._due = min(self._usable_until, self._fetch_started + _ABANDON)
        else:
            self._due = min(max(self._refresh_at, self._retry_at), self._usable_until)
