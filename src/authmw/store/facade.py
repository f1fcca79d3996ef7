"""The :class:`Store`: the roles composed into the one object the CLI, the endpoints and the caches open."""

from __future__ import annotations

from typing import Any

from authmw.store.admin import DEFAULT_DOMAIN, Administration, ensure_system_policies
from authmw.store.base import new_id
from authmw.store.inventory import Inventory
from authmw.store.keys import ACTIVE_SEALING_KEY, KeyManagement, add_sealing_key, add_signing_key
from authmw.store.notebooks import Notebooks
from authmw.store.reads import IdentityReads
from authmw.store.schema import Schema
from authmw.workspaces import DEFAULT_WORKSPACE_ID

__all__ = ["Store"]


class Store(Administration, Inventory, Notebooks, KeyManagement, IdentityReads, Schema):
    """An identity store on a :class:`~authmw.store.database.Database`, secrets sealed under ``keyring``.

    Its verbs come from one module per role: :mod:`~authmw.store.admin` (administration),
    :mod:`~authmw.store.inventory` (the administrator's lists and shows),
    :mod:`~authmw.store.notebooks` (notebook instances, reached over SSH), :mod:`~authmw.store.keys` (signing and
    sealing keys, resealing), :mod:`~authmw.store.reads` (what the pipeline reads, with the revision) and
    :mod:`~authmw.store.schema` (migrations).
    ``whitelist_limit`` caps the entries of one IP whitelist (5, as ModelArts allows for a notebook).
    """

    def initialize(self) -> dict[str, Any]:
        """Migrate, then create what a store starts with if absent: the ``default`` domain, the default
        workspace ``"0"``, the system policies and a token signing key. Idempotent."""
        start, end = self.migrate()
        now = self._now()
        with self.db.write() as tx:
            if tx.one("SELECT 1 FROM domains WHERE name = ?", (DEFAULT_DOMAIN,)) is None:
                tx.run("INSERT INTO domains VALUES (?, ?, ?)", (new_id(), DEFAULT_DOMAIN, now))
            if tx.one("SELECT 1 FROM workspaces WHERE id = ?", (DEFAULT_WORKSPACE_ID,)) is None:
                tx.run(
                    "INSERT INTO workspaces VALUES (?, NULL, 'default', 'PUBLIC', NULL, ?)",
                    (DEFAULT_WORKSPACE_ID, now),
                )
            ensure_system_policies(tx, now)
            if tx.one("SELECT 1 FROM signing_keys WHERE retired_at IS NULL AND algorithm = 'EdDSA'") is None:
                add_signing_key(tx, self.keyring, now)
            if tx.one(ACTIVE_SEALING_KEY) is None:
                add_sealing_key(tx, self.keyring, now)
        self.check_keyring()
        return {"schema_from": start, "schema_to": end, "domain": DEFAULT_DOMAIN, "workspace": DEFAULT_WORKSPACE_ID}
