"""What SSH access to a notebook reads: one snapshot, no master key, no policy engine.

The ``AuthorizedKeysCommand`` runs once per key a client offers, as an unprivileged user, on a read-only store:
it reads public keys, names, flags and whitelists (never a sealed value), so it needs neither the master key
nor the administration verbs, and imports only what those reads need. :func:`workspace_at` lives here for the
same reason: the pipeline's reads and this one share it.
"""

from __future__ import annotations

import json

from authmw.clientaddr import IpWhitelist
from authmw.identity import ADMIN_GROUP
from authmw.models import AuthType, WhitelistScope, Workspace
from authmw.sshaccess import NotebookAccess, Owner
from authmw.store.database import Database, Tx

__all__ = ["notebook_access", "owner_at", "workspace_at"]


def notebook_access(db: Database, notebook: str, domain: str) -> NotebookAccess | None:
    """The notebook ``notebook`` of the domain named ``domain`` as SSH access needs it (None if there is none)."""
    with db.read() as tx:
        row = tx.one(
            "SELECT n.owner_id, n.keypair_id, n.workspace_id, n.login_user, n.whitelist FROM notebooks n "
            "JOIN domains d ON d.id = n.domain_id WHERE n.name = ? AND d.name = ?",
            (notebook, domain),
        )
        if row is None:
            return None
        owner_id, keypair_id, workspace_id, login_user, whitelist = row
        owner = None if owner_id is None else owner_at(tx, owner_id)
        key = None
        if keypair_id is not None and owner is not None:
            # Only the owner's own key pair opens the notebook, whatever the row says.
            key = tx.one(
                "SELECT name, public_key, expires_at FROM keypairs WHERE id = ? AND user_id = ?",
                (keypair_id, owner_id),
            )
        workspace = None if workspace_id is None else workspace_at(tx, workspace_id)
        whitelists = [IpWhitelist.parse(json.loads(whitelist))]
        if owner_id is not None:
            whitelists.append(_whitelist(tx, WhitelistScope.USER, owner_id))
        if workspace_id is not None:
            whitelists.append(_whitelist(tx, WhitelistScope.WORKSPACE, workspace_id))
    return NotebookAccess(
        notebook=notebook,
        login_user=login_user,
        owner=owner,
        keypair=None if key is None else key[0],
        public_key=None if key is None else key[1],
        key_expires_at=None if key is None or key[2] is None else int(key[2]),
        workspace=workspace,
        whitelists=tuple(whitelists),
    )


def owner_at(tx: Tx, user_id: str) -> Owner | None:
    """The user ``user_id`` with their groups, as the workspace rule reads them (None if there is none)."""
    row = tx.one("SELECT name, domain_id, enabled FROM users WHERE id = ?", (user_id,))
    if row is None:
        return None
    groups = tx.rows(
        "SELECT g.id, g.name FROM group_members m JOIN groups_ g ON g.id = m.group_id WHERE m.user_id = ?", (user_id,)
    )
    return Owner(
        user_id=user_id,
        user_name=row[0],
        domain_id=row[1],
        enabled=bool(row[2]),
        groups=frozenset(g[0] for g in groups),
        is_admin=any(g[1] == ADMIN_GROUP for g in groups),
    )


def _whitelist(tx: Tx, scope: WhitelistScope, scope_id: str) -> IpWhitelist:
    row = tx.one("SELECT entries FROM whitelists WHERE scope = ? AND scope_id = ?", (scope.value, scope_id))
    return IpWhitelist() if row is None else IpWhitelist.parse(json.loads(row[0]))


def workspace_at(tx: Tx, workspace_id: str) -> Workspace | None:
    """The workspace ``workspace_id`` with its grants, as ``tx`` sees it."""
    row = tx.one("SELECT name, domain_id, auth_type, owner_id FROM workspaces WHERE id = ?", (workspace_id,))
    if row is None:
        return None
    grants = tx.rows(
        "SELECT principal_type, principal_id FROM workspace_grants WHERE workspace_id = ?", (workspace_id,)
    )
    return Workspace(
        id=workspace_id,
        name=row[0],
        domain_id=row[1],
        auth_type=AuthType(row[2]),
        owner_id=row[3],
        granted_users=frozenset(i for k, i in grants if k == "user"),
        granted_groups=frozenset(i for k, i in grants if k == "group"),
    )
