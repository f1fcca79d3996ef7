"""Notebook instances, the unit of SSH remote access: create, list, show, update, delete (one write each).

A notebook (as in ModelArts) belongs to a domain and a workspace, has an owner, the owner's key pair chosen
for it, the account SSH logs into and an IP whitelist. What a login may do is decided per attempt by
:mod:`authmw.sshaccess` from :func:`~authmw.store.notebook_reads.notebook_access`; these verbs keep the rows
coherent (the key pair is the owner's, the owner may enter the workspace) when they are written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from authmw.clientaddr import IpWhitelist
from authmw.errors import ChangeRefused, NotFound
from authmw.sshaccess import DEFAULT_LOGIN_USER, LOGIN_USER
from authmw.store import names
from authmw.store.base import StoreBase, new_id
from authmw.store.database import Row, Tx
from authmw.store.names import DEFAULT_DOMAIN
from authmw.store.notebook_reads import owner_at, workspace_at
from authmw.store.records import Notebook
from authmw.store.rules import check, check_name
from authmw.workspaces import DEFAULT_WORKSPACE_ID, can_access_workspace

__all__ = ["Notebooks"]

_SELECT = (
    "SELECT n.name, n.domain_id, u.name, k.name, n.workspace_id, n.login_user, n.whitelist FROM notebooks n "
    "JOIN domains d ON d.id = n.domain_id LEFT JOIN users u ON u.id = n.owner_id "
    "LEFT JOIN keypairs k ON k.id = n.keypair_id"
)


class Notebooks(StoreBase):
    """The administration verbs of notebook instances."""

    def create_notebook(
        self,
        name: str,
        *,
        owner: str,
        keypair: str,
        domain: str = DEFAULT_DOMAIN,
        workspace: str | None = None,
        whitelist: Iterable[str] = (),
        login_user: str = DEFAULT_LOGIN_USER,
    ) -> Notebook:
        """A notebook of ``owner`` (a user of ``domain``) opened by their key pair ``keypair``, in ``workspace``
        (default ``"0"``), which the owner must be allowed to enter."""
        check_name("notebook", name)
        entries = self._whitelist(whitelist)
        _check_login_user(login_user)
        with self.db.write() as tx:
            domain_id = names.domain_id(tx, domain)
            if tx.one("SELECT 1 FROM notebooks WHERE domain_id = ? AND name = ?", (domain_id, name)):
                raise ChangeRefused(f"notebook {name!r} already exists in domain {domain!r}")
            owner_id = names.user_id(tx, owner, domain)
            keypair_id = _keypair_id(tx, owner_id, owner, keypair)
            workspace_id = names.workspace_id(tx, workspace or DEFAULT_WORKSPACE_ID, domain)
            _check_entry(tx, owner_id, workspace_id, owner)
            tx.run(
                "INSERT INTO notebooks (id, domain_id, name, owner_id, keypair_id, workspace_id, login_user, "
                "whitelist, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    new_id(),
                    domain_id,
                    name,
                    owner_id,
                    keypair_id,
                    workspace_id,
                    login_user,
                    json.dumps(entries),
                    self._now(),
                ),
            )
        return Notebook(name, domain_id, owner, keypair, workspace_id, login_user, tuple(entries))

    def list_notebooks(self, *, domain: str = DEFAULT_DOMAIN, owner: str | None = None) -> list[Notebook]:
        with self.db.read() as tx:
            domain_id = names.domain_id(tx, domain)
            if owner is None:
                rows = tx.rows(_SELECT + " WHERE n.domain_id = ? ORDER BY n.name", (domain_id,))
            else:
                owner_id = names.user_id(tx, owner, domain)
                rows = tx.rows(_SELECT + " WHERE n.owner_id = ? ORDER BY n.name", (owner_id,))
        return [_notebook(row) for row in rows]

    def find_notebook(self, name: str, *, domain: str = DEFAULT_DOMAIN) -> Notebook:
        with self.db.read() as tx:
            return _notebook(_row(tx, name, domain))

    def update_notebook(
        self,
        name: str,
        *,
        domain: str = DEFAULT_DOMAIN,
        owner: str | None = None,
        keypair: str | None = None,
        workspace: str | None = None,
        whitelist: Sequence[str] | None = None,
        login_user: str | None = None,
    ) -> Notebook:
        """Change what is given; a new owner needs a key pair of theirs, and the owner must still be allowed
        into the (new) workspace. ``whitelist=[]`` clears the whitelist."""
        if owner is not None and keypair is None:
            raise ChangeRefused("a new owner needs one of their key pairs: give --keypair too")
        entries = None if whitelist is None else self._whitelist(whitelist)
        if login_user is not None:
            _check_login_user(login_user)
        with self.db.write() as tx:
            domain_id = names.domain_id(tx, domain)
            current = tx.one(
                "SELECT id, owner_id, workspace_id FROM notebooks WHERE domain_id = ? AND name = ?", (domain_id, name)
            )
            if current is None:
                raise NotFound(f"no notebook {name!r} in domain {domain!r}")
            notebook_id, owner_id, workspace_id = current
            changes: dict[str, object] = {}
            if owner is not None:
                owner_id = changes["owner_id"] = names.user_id(tx, owner, domain)
            if keypair is not None:
                if owner_id is None:
                    raise ChangeRefused(f"notebook {name!r} has no owner: give --owner with --keypair")
                owner_name = owner or _user_name(tx, owner_id)
                changes["keypair_id"] = _keypair_id(tx, owner_id, owner_name, keypair)
            if workspace is not None:
                workspace_id = changes["workspace_id"] = names.workspace_id(tx, workspace, domain)
            if owner_id is not None and workspace_id is not None and ("owner_id" in changes or workspace is not None):
                _check_entry(tx, owner_id, workspace_id, owner or _user_name(tx, owner_id))
            if entries is not None:
                changes["whitelist"] = json.dumps(entries)
            if login_user is not None:
                changes["login_user"] = login_user
            if changes:
                assignments = ", ".join(f"{column} = ?" for column in changes)
                tx.run(
                    f"UPDATE notebooks SET {assignments} WHERE id = ?",  # noqa: S608 - fixed column names
                    (*changes.values(), notebook_id),
                )
            return _notebook(_row(tx, name, domain))

    def delete_notebook(self, name: str, *, domain: str = DEFAULT_DOMAIN) -> None:
        """Delete the notebook: the next SSH login attempt into it finds nothing."""
        with self.db.write() as tx:
            domain_id = names.domain_id(tx, domain)
            if not tx.run("DELETE FROM notebooks WHERE domain_id = ? AND name = ?", (domain_id, name)):
                raise NotFound(f"no notebook {name!r} in domain {domain!r}")

    def _whitelist(self, entries: Iterable[str]) -> list[str]:
        try:
            whitelist = IpWhitelist.parse(dict.fromkeys(entries))
        except ValueError as exc:
            raise ChangeRefused(str(exc)) from None
        if len(whitelist.networks) > self.whitelist_limit:
            raise ChangeRefused(f"a whitelist holds at most {self.whitelist_limit} entries")
        return list(whitelist.entries)


def _check_login_user(login_user: str) -> None:
    check(LOGIN_USER, "login account", login_user, "a POSIX user name: 1-32 of a-z, 0-9, _ and -, not a digit first")


def _keypair_id(tx: Tx, owner_id: str, owner: str, keypair: str) -> str:
    row = tx.one("SELECT id FROM keypairs WHERE user_id = ? AND name = ?", (owner_id, keypair))
    if row is None:
        raise NotFound(f"user {owner!r} has no key pair {keypair!r}")
    return str(row[0])


def _user_name(tx: Tx, user_id: str) -> str:
    row = tx.one("SELECT name FROM users WHERE id = ?", (user_id,))
    return "?" if row is None else str(row[0])


def _check_entry(tx: Tx, owner_id: str, workspace_id: str, owner: str) -> None:
    """The owner must be allowed into the workspace (the same rule every login is judged by)."""
    workspace = workspace_at(tx, workspace_id)
    member = owner_at(tx, owner_id)
    if workspace is None or member is None or not can_access_workspace(member, workspace):
        raise ChangeRefused(f"user {owner!r} may not enter workspace {workspace_id}")


def _row(tx: Tx, name: str, domain: str) -> Row:
    row = tx.one(_SELECT + " WHERE n.name = ? AND d.name = ?", (name, domain))
    if row is None:
        raise NotFound(f"no notebook {name!r} in domain {domain!r}")
    return row


def _notebook(row: Row) -> Notebook:
    return Notebook(row[0], row[1], row[2], row[3], row[4], row[5], tuple(json.loads(row[6])))
