"""The identity store (edge layer: I/O lives here, never in the core).

``open_store(url)`` opens embedded SQLite (``sqlite:///./authmw.db``, the default) or PostgreSQL
(``postgresql://...``) with the master key ring from the environment; :class:`CachedIdentity` is what the
request pipeline reads through.
"""

from __future__ import annotations

import os

from authmw.store.backends import open_database
from authmw.store.cached import CachedIdentity
from authmw.store.secrets import Keyring
from authmw.store.sqlstore import DEFAULT_DOMAIN, Store

__all__ = ["DEFAULT_DOMAIN", "DEFAULT_STORE_URL", "STORE_ENV", "CachedIdentity", "Keyring", "Store", "open_store"]

STORE_ENV = "AUTHMW_STORE"
DEFAULT_STORE_URL = "sqlite:///./authmw.db"


def open_store(
    url: str | None = None,
    *,
    keyring: Keyring | None = None,
    create_master_key: bool = False,
    whitelist_limit: int = 5,
) -> Store:
    """Open the store at ``url`` (else ``$AUTHMW_STORE``, else ``sqlite:///./authmw.db``).

    The master key ring comes from ``AUTHMW_MASTER_KEY`` / ``AUTHMW_MASTER_KEY_FILE`` unless given; with
    ``create_master_key`` a missing key file is created (mode 0600), as ``authmw init`` does.
    """
    url = url or os.environ.get(STORE_ENV) or DEFAULT_STORE_URL
    ring = keyring or Keyring.from_environment(create=create_master_key)
    return Store(open_database(url), ring, whitelist_limit=whitelist_limit)
