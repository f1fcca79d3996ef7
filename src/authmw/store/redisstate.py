"""The shared state in Redis (edge): :class:`RedisState`, one per process and configuration (:func:`shared_state`).

Every check is one round-trip running one Lua script (atomic: no two processes can both pass a check), on a
connection pool whose connect and read timeouts are ``shared_state_timeout`` (tens of milliseconds), so a call
that must wait for Redis waits that long at most. The verifier runs synchronously — on the proxy's event loop for
small bodies — and a local round-trip costs a fraction of a millisecond (benchmarks/bench_shared_state.py), less
than a hop to a thread pool would; the timeout bounds the worst case. After a failure Redis is not asked again until
a probe thread's PING (every ``_PROBE_EVERY`` seconds) is answered: an outage costs each request nothing, not one
timeout each, and one slow answer (a stalled process on a loaded machine) refuses the requests of one interval, not
of a long cool-down (automatic recovery).

Unreachable or slow Redis: :class:`~authmw.errors.SharedStateUnavailable` (503 ``shared_state_unavailable``,
fail closed), or with ``shared_state_fallback: local`` the replay check and the limits run in the process (a
warning once per outage, and :attr:`RedisState.fallbacks` counts the requests checked so). Change notices ride on
pub/sub: a subscriber thread per process calls each listener on every notice, reconnecting on its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

from authmw.errors import (
    AuthmwError,
    ConfigurationError,
    ReplayedRequest,
    ReplayQuotaExceeded,
    SharedStateUnavailable,
)
from authmw.extras import requires
from authmw.settings import Settings
from authmw.sharedstate import Limit, Listeners, LocalState, SharedState
from authmw.signing.replay import ReplayGuard

__all__ = ["SHARED_STATE_ENV", "RedisState", "close_shared_states", "shared_state"]

SHARED_STATE_ENV = "AUTHMW_SHARED_STATE"

logger = logging.getLogger("authmw.sharedstate")

_PROBE_EVERY = 0.1  # seconds between PINGs while Redis is marked down
_PENDING_TTL = 120  # seconds an attempt in flight counts at most (a process that died mid-attempt)

# KEYS[1] the fingerprint, KEYS[2] the owner's live fingerprints; ARGV now, until, quota.
_REMEMBER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 2 end
local ttl = math.max(1, math.ceil((tonumber(ARGV[2]) - tonumber(ARGV[1])) * 1000))
redis.call('SET', KEYS[1], '1', 'PX', ttl)
redis.call('ZADD', KEYS[2], ARGV[2], KEYS[1])
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return 0
"""

# KEYS: events, pending, events, pending, ...; ARGV now, window, reserve (1/0), pending ttl, limits...
_RESERVE = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local wait = 0
for i = 1, #KEYS / 2 do
  local events, pending, limit = KEYS[2 * i - 1], KEYS[2 * i], tonumber(ARGV[4 + i])
  redis.call('ZREMRANGEBYSCORE', events, '-inf', now - window)
  local seen = redis.call('ZCARD', events)
  local flying = tonumber(redis.call('GET', pending) or '0')
  if seen + flying >= limit then
    local w = 1
    if seen >= limit then
      local nth = redis.call('ZRANGE', events, -limit, -limit, 'WITHSCORES')
      w = math.max(1, math.ceil(tonumber(nth[2]) + window - now))
    end
    if w > wait then wait = w end
  end
end
if wait == 0 and ARGV[3] == '1' then
  for i = 1, #KEYS / 2 do
    redis.call('INCR', KEYS[2 * i])
    redis.call('EXPIRE', KEYS[2 * i], tonumber(ARGV[4]))
  end
end
return wait
"""

# KEYS: events, pending, ...; ARGV now, window, count (1/0), member, index of the pair to forget (0: none).
_SETTLE = """
local ttl = math.ceil(tonumber(ARGV[2])) + 1
for i = 1, #KEYS / 2 do
  local events, pending = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('DECR', pending) <= 0 then redis.call('DEL', pending) end
  if ARGV[3] == '1' then
    redis.call('ZADD', events, ARGV[1], ARGV[4] .. ':' .. i)
    redis.call('EXPIRE', events, ttl)
  end
end
local forget = tonumber(ARGV[5])
if forget > 0 then redis.call('DEL', KEYS[2 * forget - 1]) end
return 0
"""


# KEYS[1] the secret; ARGV[1] a value, kept only if none is there yet.
_SECRET = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""


class RedisState:
    """:class:`~authmw.sharedstate.SharedState` in the Redis at ``url`` (``redis://[:PASSWORD@]HOST:PORT/DB``,
    ``rediss://`` for TLS), its keys under ``prefix``; ``timeout`` seconds for each connect and each answer.
    ``fallback``: on an outage check in the process (``local``) instead of refusing (``refuse``)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "authmw:",
        timeout: float = 0.05,
        fallback: bool = False,
        quota: int = 250_000,
        max_connections: int = 64,
        clock: Callable[[], float] = time.time,
    ) -> None:
        with requires("redis", "shared_state"):
            import redis
        self._redis_errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        try:
            self._client = redis.Redis.from_url(
                url,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                max_connections=max_connections,
                health_check_interval=30,
            )
        except ValueError as exc:
            raise ConfigurationError(f"shared_state: {exc}") from None
        self._url = url
        self._prefix = prefix
        self._quota = quota
        self._clock = clock
        self._remember_script = self._client.register_script(_REMEMBER)
        self._reserve_script = self._client.register_script(_RESERVE)
        self._settle_script = self._client.register_script(_SETTLE)
        self._secret_script = self._client.register_script(_SECRET)
        self._secrets: dict[str, bytes] = {}
        self.fallback = fallback
        self._local = LocalState(replay=ReplayGuard(quota=None, clock=clock)) if fallback else None
        self.fallbacks = 0  # requests checked in the process while Redis was unreachable (a metric)
        self._down = False
        self._down_lock = threading.Lock()
        self._listeners = Listeners()
        self._channel = f"{prefix}revision"
        self._subscriber: threading.Thread | None = None
        self._closed = threading.Event()

    def describe(self) -> str:
        """The URL without its password, for logs."""
        parts = urllib.parse.urlsplit(self._url)
        host = parts.hostname or "localhost"
        return f"{parts.scheme}://{host}:{parts.port or 6379}{parts.path or '/0'} (prefix {self._prefix!r})"

    # The replay window -------------------------------------------------------------------------------------------

    def remember(self, fingerprint: bytes, until: float, owner: str) -> None:
        """As :class:`~authmw.signing.replay.ReplayGuard`; a fingerprint is one key expiring with its request."""
        keys = [f"{self._prefix}r:{fingerprint.hex()}", f"{self._prefix}o:{owner}"]
        found = self._call(self._remember_script, keys, [self._clock(), until, self._quota])
        if found is None:
            assert self._local is not None
            self._local.remember(fingerprint, until, owner)
        elif found == 1:
            raise ReplayedRequest("request already accepted")
        elif found == 2:
            raise ReplayQuotaExceeded(f"one owner holds its quota of {self._quota} live requests")
        elif self._local is not None:  # kept here too, so that an outage to come still refuses it in this process
            self._local_quietly(fingerprint, until, owner)

    def _local_quietly(self, fingerprint: bytes, until: float, owner: str) -> None:
        assert self._local is not None
        with contextlib.suppress(AuthmwError):  # Redis decided; the local copy is only a spare
            self._local.remember(fingerprint, until, owner)

    # Sliding windows ---------------------------------------------------------------------------------------------

    def reserve(self, limits: Sequence[Limit], window: float) -> int:
        return self._window(limits, window, reserve=True)

    def waiting(self, limits: Sequence[Limit], window: float) -> int:
        return self._window(limits, window, reserve=False)

    def _window(self, limits: Sequence[Limit], window: float, *, reserve: bool) -> int:
        keys = [name for key, _ in limits for name in self._pair(key)]
        args = [self._clock(), window, "1" if reserve else "0", _PENDING_TTL, *(limit for _, limit in limits)]
        wait = self._call(self._reserve_script, keys, args)
        if wait is None:
            assert self._local is not None
            return self._local.reserve(limits, window) if reserve else self._local.waiting(limits, window)
        return int(wait)

    def settle(self, keys: Sequence[str], window: float, *, count: bool, forget: str | None = None) -> None:
        pairs = [name for key in keys for name in self._pair(key)]
        index = list(keys).index(forget) + 1 if forget is not None and forget in keys else 0
        args = [self._clock(), window, "1" if count else "0", os.urandom(8).hex(), index]
        try:
            if self._call(self._settle_script, pairs, args) is None:
                assert self._local is not None
                self._local.settle(keys, window, count=count, forget=forget)
        except SharedStateUnavailable:  # the attempt was decided: it expires from Redis on its own (_PENDING_TTL)
            logger.warning("shared state unreachable: an attempt could not be settled in %s", self.describe())

    def secret(self, name: str) -> bytes:
        found = self._secrets.get(name)
        if found is None:
            value = self._call(self._secret_script, [f"{self._prefix}secret:{name}"], [os.urandom(16).hex()])
            if value is None:  # the fallback: this process's own until Redis answers
                assert self._local is not None
                return self._local.secret(name)
            found = self._secrets[name] = bytes.fromhex(value.decode() if isinstance(value, bytes) else value)
        return found

    def _pair(self, key: str) -> tuple[str, str]:
        return f"{self._prefix}w:{key}", f"{self._prefix}p:{key}"

    # Change notices ----------------------------------------------------------------------------------------------

    def publish(self, revision: int) -> None:
        try:
            self._client.publish(self._channel, str(revision))
        except self._redis_errors as exc:
            logger.warning("could not publish revision %d to %s (%s): polling will find it", revision,
                           self.describe(), type(exc).__name__)  # fmt: skip

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._listeners.add(callback)
        if self._subscriber is None:
            self._subscriber = threading.Thread(target=self._listen, name="authmw-notices", daemon=True)
            self._subscriber.start()

    def _listen(self) -> None:
        """Hear notices until closed; reconnect after a failure (and notify then: notices may have been missed)."""
        backoff = 0.05
        while not self._closed.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self._channel)
                backoff = 0.05
                while not self._closed.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None and message.get("type") == "message":
                        self._listeners.notify()
            except self._redis_errors:
                self._closed.wait(backoff)
                backoff = min(1.0, backoff * 2)
                self._listeners.notify()
            except Exception:  # a listener failed: keep hearing notices
                logger.exception("a change notice listener failed")
            finally:
                pubsub.close()

    # Calls -------------------------------------------------------------------------------------------------------

    def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """The script's answer; None when Redis failed and the fallback is on; else SharedStateUnavailable."""
        if self._down:
            return self._outage()
        try:
            return script(keys=keys, args=args)
        except self._redis_errors as exc:
            self._went_down(exc)
            return self._outage()

    def _went_down(self, exc: BaseException) -> None:
        with self._down_lock:
            if self._down:
                return
            self._down = True
        then = "checking in this process alone" if self._local is not None else "refusing what needs it (503)"
        logger.warning("shared state %s unreachable (%s): %s", self.describe(), type(exc).__name__, then)
        threading.Thread(target=self._probe, name="authmw-redis-probe", daemon=True).start()

    def _probe(self) -> None:
        """PING until Redis answers, then let requests use it again."""
        while not self._closed.wait(_PROBE_EVERY):
            try:
                self._client.ping()
            except self._redis_errors:
                continue
            self._down = False
            logger.warning("shared state %s reachable again", self.describe())
            return

    def _outage(self) -> None:
        if self._local is None:
            raise SharedStateUnavailable("the shared state did not answer in time") from None
        self.fallbacks += 1

    def close(self) -> None:
        self._closed.set()
        self._client.close()


# One per process and configuration: a reload keeps it (and its subscriber), a forked worker makes its own.
_OPEN: dict[tuple[Any, ...], SharedState] = {}
_OPEN_LOCK = threading.Lock()


def shared_state(settings: Settings) -> SharedState | None:
    """The shared state ``settings`` name, else ``$AUTHMW_SHARED_STATE`` (None: neither), opened once per process."""
    url = settings.shared_state or os.environ.get(SHARED_STATE_ENV)
    if not url:
        return None
    key = (
        os.getpid(),
        url,
        settings.shared_state_prefix,
        settings.shared_state_timeout,
        settings.shared_state_fallback,
    )
    with _OPEN_LOCK:
        found = _OPEN.get(key)
        if found is None:
            if not url.startswith(("redis://", "rediss://", "unix://")):
                raise ConfigurationError("shared_state must be a redis://, rediss:// or unix:// URL")
            found = _OPEN[key] = RedisState(
                url,
                prefix=settings.shared_state_prefix,
                timeout=settings.shared_state_timeout / 1000,
                fallback=settings.shared_state_fallback == "local",
                quota=settings.replay_quota or max(1, settings.replay_capacity // 4),
            )
        return found


def close_shared_states() -> None:
    """Close every shared state this process opened (before a fork: a child opens its own)."""
    with _OPEN_LOCK:
        for state in _OPEN.values():
            state.close()
        _OPEN.clear()
