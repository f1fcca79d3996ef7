"""The store as the hot path reads it: bounded in-process caches invalidated by the store revision.

At most every ``refresh`` seconds (0.25 by default) one cheap query reads the store revision, which every
change increments; when it moved, every cache is dropped. So a disabled key, a removed group member or a
changed policy takes effect within ``refresh`` plus one query in every process sharing the store. Entries
loaded from a snapshot older than the revision already seen are returned but not kept, so a read racing a
change never leaves a stale entry behind (the check and the store happen under one lock). Unknown access keys
are cached too, apart: a repeated unknown key costs what a known one does.

The last use of each access key is noted in memory (:meth:`CachedIdentity.key_used`: one dict write per request)
and written in one batch at most once every ``use_interval`` seconds (60), on a thread of its own, without
bumping the revision: ``authmw key list`` shows it to the minute, and no request waits for it.

With a ``deadline`` (the proxy's ``store_timeout``), no caller waits longer than that for the store: reads run on
a few threads of their own and an answer that comes later is dropped (503 ``store_unavailable``), so an event loop
calling in is held at most that long, whatever the network does. A read or revision poll that fails or misses the
deadline marks the store down (so no caller after it waits): then entries already cached are served for ``grace``
seconds after the last answer (a change made meanwhile cannot be seen: ``grace`` bounds that), everything else is
refused at once, and a probe on a reader thread (at most every ``refresh`` seconds, started by the traffic or
``/readyz``) marks it up again.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import suppress
from queue import SimpleQueue
from typing import Any, TypeVar

from authmw.cache import BoundedCache
from authmw.clientaddr import IpWhitelist
from authmw.errors import StoreUnavailable
from authmw.models import AccessKey, Principal, Project, WhitelistScope, Workspace
from authmw.policy import PolicySet
from authmw.store.reads import IdentityReads, compile_policies
from authmw.store.rules import ACCESS_KEY as _ACCESS_KEY

__all__ = ["CachedIdentity"]

logger = logging.getLogger("authmw.store")

_MISSING: Any = object()
_T = TypeVar("_T")


class _Readers:
    """``count`` daemon threads running store reads, each read on a free one or not at all. Started with the cache
    and kept for its life (:meth:`stop` when it is dropped): a thread started by a request, or one that ended when
    idle, would spend that request's deadline being created and scheduled (tens of milliseconds on a loaded
    machine: the first requests of a fresh process were refused so). Daemon threads (not a
    ``ThreadPoolExecutor``, whose threads the interpreter joins at exit): a read stuck on a dead network must not
    keep a stopping process alive."""

    def __init__(self, count: int) -> None:
        self._jobs: SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = SimpleQueue()
        self._free = threading.BoundedSemaphore(count)
        self._count = count
        for _ in range(count):
            threading.Thread(target=self._work, name="authmw-store", daemon=True).start()

    def submit(self, read: Callable[..., _T], *args: Any) -> Future[_T] | None:
        """``read(*args)`` on a reader thread; None if every reader is busy."""
        if not self._free.acquire(blocking=False):
            return None
        future: Future[_T] = Future()
        self._jobs.put((future, read, args))
        return future

    def stop(self) -> None:
        """End the threads once they are done with what they hold."""
        for _ in range(self._count):
            self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, read, args = job
            try:
                if future.set_running_or_notify_cancel():
                    future.set_result(read(*args))
            except BaseException as exc:  # handed to the caller, which waits on the future
                future.set_exception(exc)
            finally:
                del job, future, read, args  # nothing of a read outlives it (the cache it fills, say)
                self._free.release()


class CachedIdentity:
    """An :class:`~authmw.identity.IdentitySource` (and ``KeySource``) over a store's revisioned reads.

    ``max_entries`` bounds each cache (access keys, principals, workspaces, whitelists, compiled policy
    sets), least recently used first out; unknown access keys go to a separate cache of ``max_unknown``
    entries, so a flood of made-up keys cannot push real ones out. A string that cannot be an access key
    never reaches the store or a cache. ``timer`` (monotonic) and ``clock`` (wall time, for the last use of a
    key) are injectable for tests. ``deadline`` (seconds; None: wait as long as the store does), ``grace`` and
    ``readers`` (threads waiting on the store at most): see the module.
    """

    def __init__(
        self,
        store: IdentityReads,
        *,
        refresh: float = 0.25,
        max_entries: int = 50_000,
        max_unknown: int = 10_000,
        use_interval: float = 60.0,
        timer: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
        deadline: float | None = None,
        grace: float = 30.0,
        readers: int = 4,
    ) -> None:
        self.store = store
        self._wait = deadline
        self._grace = grace
        self._down = False
        self._last_answer = timer()
        self._probing = False
        self._readers = None if deadline is None else _Readers(readers)
        if self._readers is not None:
            weakref.finalize(self, self._readers.stop)  # a guard replaced on reload leaves no thread behind
        self._refresh = refresh
        self._timer = timer
        self._lock = threading.Lock()
        self._revision = -1
        self._deadline = float("-inf")
        self._clock = clock
        self._use_interval = use_interval
        self._used: dict[str, int] = {}  # access key -> when last used (epoch seconds), not yet written
        self._used_deadline = timer() + use_interval
        self._writing = threading.Lock()  # one batch in flight at a time
        self._keys: BoundedCache[str, AccessKey] = BoundedCache(max_entries)
        self._unknown: BoundedCache[str, None] = BoundedCache(max_unknown)
        self._principals: BoundedCache[str, Principal | None] = BoundedCache(max_entries)
        self._agencies: BoundedCache[str, Principal | None] = BoundedCache(max_entries)
        self._user_ids: BoundedCache[tuple[str, str], str | None] = BoundedCache(max_entries)
        self._workspaces: BoundedCache[str, Workspace | None] = BoundedCache(max_entries)
        self._projects: BoundedCache[str, Project | None] = BoundedCache(max_entries)
        self._revoked: BoundedCache[str, bool] = BoundedCache(max_entries)
        # One cache per scope, picked by identity: hashing an enum member runs Python code.
        self._user_lists: BoundedCache[str, IpWhitelist] = BoundedCache(max_entries)
        self._workspace_lists: BoundedCache[str, IpWhitelist] = BoundedCache(max_entries)
        self._route_lists: BoundedCache[str, IpWhitelist] = BoundedCache(max_entries)
        self._policy_sets: BoundedCache[tuple[str, ...], PolicySet] = BoundedCache(max_entries)
        self._scopes: BoundedCache[str, frozenset[WhitelistScope]] = BoundedCache(1)  # one entry: ""
        self._caches: tuple[BoundedCache[Any, Any], ...] = (
            self._keys,
            self._unknown,
            self._principals,
            self._agencies,
            self._user_ids,
            self._workspaces,
            self._projects,
            self._revoked,
            self._user_lists,
            self._workspace_lists,
            self._route_lists,
            self._policy_sets,
            self._scopes,
        )

    def __repr__(self) -> str:
        return f"CachedIdentity(revision={self._revision}, keys={len(self._keys)})"

    @property
    def revision(self) -> int:
        """The store revision the caches reflect."""
        return self._revision

    @property
    def down(self) -> bool:
        """Whether the last revision poll failed (until a probe finds the store again)."""
        return self._down

    def current_revision(self) -> int:
        """The store revision, read again if the last poll is older than ``refresh``."""
        self._fresh()
        return self._revision

    def available(self) -> bool:
        """Whether the store answers now (``/readyz``): a poll within the deadline, or a probe if it is down."""
        if self._down:
            self._probe()
            return False
        try:
            self.poll()
        except StoreUnavailable:
            return False
        return True

    def _fresh(self) -> None:
        """Poll when due; refuse every read once the store has been down longer than the grace."""
        if self._timer() >= self._deadline:
            if self._wait is None:
                self.poll()
            elif self._down:
                self._probe()
            else:
                with suppress(StoreUnavailable):  # down now: what is cached stays served within the grace
                    self.poll()
        if self._down and self._timer() - self._last_answer > self._grace:
            raise StoreUnavailable("the store has been unreachable for longer than store_grace")

    def ask(self, read: Callable[..., _T], *args: Any) -> _T:
        """``read(*args)`` within the deadline (on a reader thread), or :class:`StoreUnavailable`."""
        return self._ask(read, args, None)

    def _ask(self, read: Callable[..., Any], args: tuple[Any, ...], keep: Callable[[Any], _T] | None) -> _T:
        """``read(*args)`` (then ``keep`` of its answer) within the deadline, or :class:`StoreUnavailable`.

        ``keep`` runs on the reader thread, so an answer that comes after the caller gave up still fills the caches
        (a client retrying finds it) and says the store is up: one slow read on a loaded machine refuses that one
        request, not every uncached one until the next probe."""
        job = read if keep is None else lambda *a: keep(read(*a))
        if self._readers is None:
            return job(*args)
        if self._down:
            raise StoreUnavailable("the store is unreachable")
        future = self._readers.submit(self._answered, job, args)
        if future is None:
            raise StoreUnavailable("every store reader is waiting for the store")
        try:
            return future.result(self._wait)  # type: ignore[no-any-return]
        except FutureTimeout:
            if not future.done():  # (an answer just after the deadline has marked the store up already)
                self._went_down()  # the next caller must not wait too: the event loop it holds serves everyone
            raise StoreUnavailable("the store did not answer in time") from None
        except StoreUnavailable:
            self._went_down()
            raise

    def _answered(self, job: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        """``job(*args)`` on a reader thread; an answer (even one its caller stopped waiting for) marks the store up."""
        answer = job(*args)
        self._last_answer = self._timer()
        if self._down:
            self._down = False
            self._deadline = float("-inf")  # the next request reads the revision: changes made meanwhile are seen
        return answer

    def _went_down(self) -> None:
        if not self._down:
            logger.warning("the store is unreachable: serving cached identities for %ss", self._grace)
        self._down = True
        self._deadline = self._timer() + self._refresh

    def _probe(self) -> None:
        """Poll on a reader thread (one at a time, at most every ``refresh``), without waiting for it."""
        with self._lock:
            if self._probing or self._readers is None:
                return
            self._probing = True  # before the submit: the probe may be over before it returns
            if self._readers.submit(self._read_revision) is None:
                self._probing = False
                return
            self._deadline = self._timer() + self._refresh

    def _read_revision(self) -> None:
        try:
            self._apply(self.store.revision())
        except Exception as exc:  # still down: the next probe tries again
            logger.debug("store probe failed: %s", type(exc).__name__)
        finally:
            self._probing = False

    def poll(self) -> None:
        """Read the store revision now; drop every cache if it moved (either way: a restored database too)."""
        try:
            revision = self.ask(self.store.revision)
        except StoreUnavailable:
            self._went_down()
            raise
        self._apply(revision)

    def _apply(self, revision: int) -> None:
        """A revision the store answered: caches dropped if it moved, the store up again."""
        with self._lock:
            if revision != self._revision:
                self._clear(revision)
        if self._down:
            logger.warning("the store answers again")
        self._down = False
        now = self._timer()
        self._last_answer = now
        self._deadline = now + self._refresh
        if self._used and now >= self._used_deadline:
            self._used_deadline = now + self._use_interval
            self.flush_key_use(background=True)

    def key_used(self, access_key: str) -> None:
        """Note that ``access_key`` authenticated a request now (written later, in a batch: see the module)."""
        self._used[access_key] = int(self._clock())

    def flush_key_use(self, *, background: bool = False) -> None:
        """Write the noted last uses now (``background``: on a thread, unless a batch is still being written)."""
        if not self._writing.acquire(blocking=not background):
            return
        used, self._used = self._used, {}
        if background:
            threading.Thread(target=self._write_use, args=(used,), name="authmw-key-use", daemon=True).start()
        else:
            self._write_use(used)

    def _write_use(self, used: dict[str, int]) -> None:
        try:
            if used:
                self.store.record_key_use(used)
        except Exception as exc:  # bookkeeping only: a store hiccup loses one minute of it, never a request
            logger.warning("could not record access keys' last use: %s", type(exc).__name__)
        finally:
            self._writing.release()

    def _clear(self, revision: int) -> None:
        for cache in self._caches:
            cache.clear()
        self._revision = revision

    def _keep(self, revision: int, cache: BoundedCache[Any, Any], key: Any, value: Any) -> None:
        """Store ``value`` read at ``revision`` unless a change was seen since (checked and stored atomically)."""
        with self._lock:
            if revision > self._revision:  # the read saw a change before the poll did
                self._clear(revision)
            elif revision < self._revision:
                return
            cache.put(key, value)

    def _kept(self, answer: tuple[int, _T], cache: BoundedCache[Any, Any], key: Any) -> _T:
        revision, value = answer
        self._keep(revision, cache, key, value)
        return value

    def get_access_key(self, access_key: str) -> AccessKey | None:
        self._fresh()
        found = self._keys.get(access_key)
        if found is not None:
            return found
        if access_key in self._unknown or not _ACCESS_KEY.fullmatch(access_key):
            return None

        def keep(answer: tuple[int, AccessKey | None]) -> AccessKey | None:
            revision, key = answer
            self._keep(revision, self._unknown if key is None else self._keys, access_key, key)
            return key

        return self._ask(self.store.read_access_key, (access_key,), keep)

    def principal(self, user_id: str) -> Principal | None:
        return self._principal(self._principals, user_id, self.store.read_principal)

    def agency(self, agency_id: str) -> Principal | None:
        return self._principal(self._agencies, agency_id, self.store.read_agency)

    def _principal(
        self,
        cache: BoundedCache[str, Principal | None],
        key: str,
        read: Callable[..., tuple[int, Principal | None]],
    ) -> Principal | None:
        self._fresh()
        found = cache.get(key, _MISSING)
        if found is not _MISSING:
            return found  # type: ignore[no-any-return]
        compiled: list[tuple[tuple[str, ...], PolicySet]] = []

        def keep(answer: tuple[int, Principal | None]) -> Principal | None:
            revision, principal = answer
            for policy_key, policy_set in compiled:
                self._keep(revision, self._policy_sets, policy_key, policy_set)
            self._keep(revision, cache, key, principal)
            return principal

        return self._ask(read, (key, lambda policies: self._compile(policies, compiled)), keep)

    def _compile(
        self, policies: tuple[tuple[str, str, str], ...], compiled: list[tuple[tuple[str, ...], PolicySet]]
    ) -> PolicySet:
        # Users with the same policies share one compiled set (and its decision cache). The key covers the
        # documents, not only the ids: an import may give an id another document.
        key = tuple(hashlib.sha256(f"{i}\0{n}\0{d}".encode()).hexdigest() for i, n, d in policies)
        found = self._policy_sets.get(key)
        if found is None:
            found = compile_policies(policies)
            compiled.append((key, found))
        return found

    def user_id(self, domain: str, name: str) -> str | None:
        return self._read_through(self._user_ids, (domain, name), lambda key: self.store.read_user_id(*key))  # type: ignore[no-any-return]

    def workspace(self, workspace_id: str) -> Workspace | None:
        return self._read_through(self._workspaces, workspace_id, self.store.read_workspace)  # type: ignore[no-any-return]

    def project(self, project_id: str) -> Project | None:
        return self._read_through(self._projects, project_id, self.store.read_project)  # type: ignore[no-any-return]

    def token_revoked(self, token_id: str) -> bool:
        return bool(self._read_through(self._revoked, token_id, self.store.read_token_revoked))

    def _read_through(self, cache: BoundedCache[Any, Any], key: Any, read: Callable[[Any], tuple[int, Any]]) -> Any:
        """``cache[key]`` (None included), else ``read(key)`` kept in it."""
        self._fresh()
        found = cache.get(key, _MISSING)
        if found is not _MISSING:
            return found
        return self._ask(read, (key,), lambda answer: self._kept(answer, cache, key))

    def whitelist_scopes(self) -> frozenset[WhitelistScope]:
        """The scopes that have at least one whitelist, as of the revision the caches reflect: most stores have
        none, and the pipeline then skips its four lookups per request (kept and dropped like every entry)."""
        self._fresh()
        found = self._scopes.get("")
        if found is not None:
            return found
        revision, scopes = self.ask(self.store.read_whitelist_scopes)
        self._keep(revision, self._scopes, "", scopes)
        return scopes

    def whitelist(self, scope: WhitelistScope, name: str) -> IpWhitelist:
        self._fresh()
        cache = (
            self._user_lists
            if scope is WhitelistScope.USER
            else self._workspace_lists
            if scope is WhitelistScope.WORKSPACE
            else self._route_lists
        )
        found = cache.get(name)
        if found is not None:
            return found
        return self._ask(self.store.read_whitelist, (scope, name), lambda answer: self._kept(answer, cache, name))  # type: ignore[no-any-return]
