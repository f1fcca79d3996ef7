"""Names given to the administration verbs, resolved to ids inside one transaction (within a domain)."""

from __future__ import annotations

from authmw.errors import NotFound
from authmw.store.database import Row, Tx
from authmw.workspaces import WORKSPACE_ID

#: The domain every verb names unless told otherwise (``authmw init`` creates it).
DEFAULT_DOMAIN = "default"

__all__ = ["DEFAULT_DOMAIN", "agency_id", "domain_id", "group_id", "policy_id", "user_id", "workspace_id"]


def domain_id(tx: Tx, domain: str) -> str:
    return _found(tx.one("SELECT id FROM domains WHERE name = ?", (domain,)), f"no domain {domain!r}")


def _named_id(tx: Tx, table: str, kind: str, name: str, domain: str) -> str:
    row = tx.one(
        f"SELECT t.id FROM {table} t JOIN domains d ON d.id = t.domain_id "  # noqa: S608 - fixed table names
        "WHERE t.name = ? AND d.name = ?",
        (name, domain),
    )
    return _found(row, f"no {kind} {name!r} in domain {domain!r}")


def user_id(tx: Tx, name: str, domain: str) -> str:
    return _named_id(tx, "users", "user", name, domain)


def group_id(tx: Tx, name: str, domain: str) -> str:
    return _named_id(tx, "groups_", "group", name, domain)


def agency_id(tx: Tx, name: str, domain: str) -> str:
    return _named_id(tx, "agencies", "agency", name, domain)


def policy_id(tx: Tx, name: str, domain_id: str) -> str:
    row = tx.one(
        # Domain policies cannot take a system policy's name, so at most one row matches.
        "SELECT id FROM policies WHERE name = ? AND (domain_id = ? OR domain_id IS NULL)",
        (name, domain_id),
    )
    return _found(row, f"no policy {name!r} in this domain or among the system policies")


def workspace_id(tx: Tx, name_or_id: str, domain: str) -> str:
    """A workspace of ``domain`` (or the shared default one) by id or by name; names never look like ids."""
    column = "id" if WORKSPACE_ID.fullmatch(name_or_id) else "name"
    row = tx.one(
        f"SELECT w.id FROM workspaces w LEFT JOIN domains d ON d.id = w.domain_id "  # noqa: S608 - fixed column
        f"WHERE w.{column} = ? AND (d.name = ? OR w.domain_id IS NULL)",
        (name_or_id, domain),
    )
    return _found(row, f"no workspace {name_or_id!r} in domain {domain!r}")


def _found(row: Row | None, missing: str) -> str:
    if row is None:
        raise NotFound(missing)
    return str(row[0])
