"""The identity store (edge layer: I/O lives here, never in the core).

``open_store(url)`` opens embedded SQLite (``sqlite:///./authmw.db``, the default) or PostgreSQL
(``postgresql://...``) with the master key ring from the environment; :class:`CachedIdentity` is what the
request pipeline reads through.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from authmw._lazy import lazy_names
from authmw.store.names import DEFAULT_DOMAIN

if TYPE_CHECKING:
    from authmw.store.cached import CachedIdentity
    from authmw.store.database import Database, StoreTimeouts
    from authmw.store.facade import Store
    from authmw.store.secrets import Keyring

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_STORE_URL",
    "STORE_ENV",
    "CachedIdentity",
    "Keyring",
    "Store",
    "open_store",
]

STORE_ENV = "AUTHMW_STORE"
DEFAULT_STORE_URL = "sqlite:///./authmw.db"

# The rest loads on first use (PEP 562): the SSH AuthorizedKeysCommand imports one read module of this package
# on every login attempt, and must not pay for the administration verbs, the caches and the policy engine.
_HOMES = {"CachedIdentity": "authmw.store.cached", "Keyring": "authmw.store.secrets", "Store": "authmw.store.facade"}


__getattr__, __dir__ = lazy_names(__name__, _HOMES)


def open_store(
    url: str | None = None,
    *,
    keyring: Keyring | None = None,
    create: bool = False,
    master_key: bool = True,
    whitelist_limit: int = 5,
    environ: Mapping[str, str] | None = None,
    timeouts: StoreTimeouts | None = None,
    lazy: bool = False,
) -> Store:
    """Open the store at ``url`` (else ``$AUTHMW_STORE``, else ``sqlite:///./authmw.db``).

    The master key ring comes from ``AUTHMW_MASTER_KEY`` / ``AUTHMW_MASTER_KEY_FILE`` in ``environ`` (default
    ``os.environ``) unless given. Only with ``create``, as ``authmw init`` does, are a missing SQLite file and a
    missing key file (mode 0600) created, but never a new key for a store that already holds secrets; without
    it a missing store is :class:`~authmw.errors.StoreUnavailable` and nothing is created. A ring that cannot
    open the store's secrets is refused (:class:`~authmw.errors.ConfigurationError`). With ``master_key=False``
    no key is read at all: the store then reads public data only (opening or sealing a secret is refused).
    ``timeouts`` bound the waits on PostgreSQL; with ``lazy`` (a proxy starting) a PostgreSQL server that does
    not answer yet is not an error, and the ring is checked later (:meth:`Store.check_keyring`).
    """
    from authmw.errors import StoreUnavailable
    from authmw.store.database import open_database
    from authmw.store.facade import Store
    from authmw.store.secrets import Keyring

    env = os.environ if environ is None else environ
    db = open_database(url or env.get(STORE_ENV) or DEFAULT_STORE_URL, create=create, timeouts=timeouts, lazy=lazy)
    try:
        if not master_key:
            return Store(db, Keyring.without_keys(), whitelist_limit=whitelist_limit)
        if keyring is None and create:
            _refuse_new_key_for_sealed_store(db, env)
        store = Store(db, keyring or Keyring.from_environment(env, create=create), whitelist_limit=whitelist_limit)
        try:
            store.check_keyring()
        except StoreUnavailable:
            if not lazy:
                raise
    except BaseException:
        db.close()
        raise
    return store


def _refuse_new_key_for_sealed_store(db: Database, env: Mapping[str, str]) -> None:
    """Minting a new master key for a store whose secrets another key sealed would lose them."""
    from authmw.errors import ConfigurationError
    from authmw.store.database import table_exists
    from authmw.store.secrets import DEFAULT_MASTER_KEY_FILE, MASTER_KEY_ENV, MASTER_KEY_FILE_ENV

    if env.get(MASTER_KEY_ENV):
        return
    path = env.get(MASTER_KEY_FILE_ENV) or DEFAULT_MASTER_KEY_FILE
    if os.path.exists(path):
        return
    with db.read() as tx:
        if not table_exists(tx, db.dialect, "signing_keys"):
            return
        sealed = tx.one("SELECT 1 FROM signing_keys UNION ALL SELECT 1 FROM access_keys LIMIT 1")
    if sealed is not None:
        raise ConfigurationError(f"the store holds secrets sealed under a master key, but {path} does not exist")
