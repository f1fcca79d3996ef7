"""The store as the hot path reads it: bounded in-process caches invalidated by the store revision.

At most every ``refresh`` seconds (0.25 by default) one cheap query reads the store revision, which every
change increments; when it moved, every cache is dropped. So a disabled key, a removed group member or a
changed policy takes effect within ``refresh`` plus one query in every process sharing the store. Entries
loaded from a snapshot older than the revision already seen are returned but not kept, so a read racing a
change never leaves a stale entry behind. Unknown access keys are cached too (as None): a repeated unknown
key costs what a known one does.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from authmw.identity import IpWhitelist, Principal, WhitelistScope, Workspace
from authmw.models import AccessKey
from authmw.policy import PolicySet, parse_policy
from authmw.store.sqlstore import Store

__all__ = ["CachedIdentity"]

V = TypeVar("V")
_MISSING: Any = object()


class CachedIdentity:
    """An :class:`~authmw.identity.IdentitySource` (and ``KeySource``) over a :class:`Store`.

    ``max_entries`` bounds each cache (access keys, principals, workspaces, whitelists, compiled policy
    sets); the oldest entry goes first. ``timer`` is injectable for tests.
    """

    def __init__(
        self,
        store: Store,
        *,
        refresh: float = 0.25,
        max_entries: int = 50_000,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._refresh = refresh
        self._max = max_entries
        self._timer = timer
        self._lock = threading.Lock()
        self._revision = -1
        self._deadline = float("-inf")
        self._keys: OrderedDict[str, AccessKey | None] = OrderedDict()
        self._principals: OrderedDict[str, Principal | None] = OrderedDict()
        self._workspaces: OrderedDict[str, Workspace | None] = OrderedDict()
        self._whitelists: OrderedDict[tuple[WhitelistScope, str], IpWhitelist] = OrderedDict()
        self._policy_sets: OrderedDict[tuple[str, ...], PolicySet] = OrderedDict()

    def __repr__(self) -> str:
        return f"CachedIdentity(revision={self._revision}, keys={len(self._keys)})"

    @property
    def revision(self) -> int:
        """The store revision the caches reflect."""
        return self._revision

    def poll(self) -> None:
        """Read the store revision now and drop every cache if it moved."""
        self._seen(self.store.revision())
        self._deadline = self._timer() + self._refresh

    def _seen(self, revision: int) -> bool:
        """Record a revision read from the store; True if entries read at it may be kept."""
        if revision == self._revision:
            return True
        with self._lock:
            if revision > self._revision:
                for cache in (self._keys, self._principals, self._workspaces, self._whitelists, self._policy_sets):
                    cache.clear()
                self._revision = revision
                return True
        return revision == self._revision

    def _keep(self, cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        if len(cache) >= self._max:
            with contextlib.suppress(KeyError):
                cache.popitem(last=False)
        cache[key] = value

    def get_access_key(self, access_key: str) -> AccessKey | None:
        if self._timer() >= self._deadline:
            self.poll()
        found = self._keys.get(access_key, _MISSING)
        if found is not _MISSING:
            return found  # type: ignore[no-any-return]
        revision, key = self.store.read_access_key(access_key)
        if self._seen(revision):
            self._keep(self._keys, access_key, key)
        return key

    def principal(self, user_id: str) -> Principal | None:
        if self._timer() >= self._deadline:
            self.poll()
        found = self._principals.get(user_id, _MISSING)
        if found is not _MISSING:
            return found  # type: ignore[no-any-return]
        revision, principal = self.store.read_principal(user_id, self._compile)
        if self._seen(revision):
            self._keep(self._principals, user_id, principal)
        return principal

    def _compile(self, policies: tuple[tuple[str, str, str], ...]) -> PolicySet:
        # Users sharing groups share one compiled set (and its decision cache).
        key = tuple(policy_id for policy_id, _name, _document in policies)
        compiled = self._policy_sets.get(key)
        if compiled is None:
            compiled = PolicySet(parse_policy(document, name=name) for _id, name, document in policies)
            self._keep(self._policy_sets, key, compiled)
        return compiled

    def workspace(self, workspace_id: str) -> Workspace | None:
        if self._timer() >= self._deadline:
            self.poll()
        found = self._workspaces.get(workspace_id, _MISSING)
        if found is not _MISSING:
            return found  # type: ignore[no-any-return]
        revision, workspace = self.store.read_workspace(workspace_id)
        if self._seen(revision):
            self._keep(self._workspaces, workspace_id, workspace)
        return workspace

    def whitelist(self, scope: WhitelistScope, name: str) -> IpWhitelist:
        if self._timer() >= self._deadline:
            self.poll()
        key = (scope, name)
        found = self._whitelists.get(key)
        if found is not None:
            return found
        revision, whitelist = self.store.read_whitelist(scope, name)
        if self._seen(revision):
            self._keep(self._whitelists, key, whitelist)
        return whitelist
