"""What the administrator reads: every entity listed and shown by name, with what hangs on it.

Reads only: one snapshot per verb, names resolved inside a domain as the administration verbs resolve them.
"""

from __future__ import annotations

import json

from authmw.clientaddr import IpWhitelist
from authmw.errors import ChangeRefused, NotFound
from authmw.models import WhitelistScope
from authmw.store import names
from authmw.store.base import StoreBase
from authmw.store.database import Row, Tx
from authmw.store.names import DEFAULT_DOMAIN
from authmw.store.records import (
    AccessKeyInfo,
    Agency,
    DomainSummary,
    GroupDetail,
    KeyPair,
    PolicyDetail,
    Project,
    UserDetail,
    WorkspaceInfo,
)
from authmw.store.rules import ROUTE, check

__all__ = [
    "CONTENT",
    "Inventory",
    "access_key_at",
    "agency_at",
    "domain_summary",
    "whitelist_scope_id",
    "workspace_info",
]

#: What a domain holds, table by table (a domain is deleted only once every count is 0).
CONTENT = (
    ("projects", "projects"),
    ("users", "users"),
    ("groups", "groups_"),
    ("policies", "policies"),
    ("agencies", "agencies"),
    ("workspaces", "workspaces"),
    ("notebooks", "notebooks"),
)


class Inventory(StoreBase):
    """``list_*`` and ``show_*`` of every entity (the CLI's list and show verbs)."""

    def show_domain(self, name: str) -> DomainSummary:
        with self.db.read() as tx:
            return domain_summary(tx, names.domain_id(tx, name), name)

    def list_projects(self, *, domain: str = DEFAULT_DOMAIN) -> list[Project]:
        with self.db.read() as tx:
            domain_id = names.domain_id(tx, domain)
            rows = tx.rows("SELECT id, name, region FROM projects WHERE domain_id = ? ORDER BY name", (domain_id,))
        return [Project(r[0], r[1], domain_id, r[2]) for r in rows]

    def show_user(self, name: str, *, domain: str = DEFAULT_DOMAIN) -> UserDetail:
        with self.db.read() as tx:
            user_id = names.user_id(tx, name, domain)
            row = tx.one(
                "SELECT enabled, password_hash, password_changed_at, created_at FROM users WHERE id = ?", (user_id,)
            )
            assert row is not None
            groups = _names(
                tx,
                "SELECT g.name FROM group_members m JOIN groups_ g ON g.id = m.group_id "
                "WHERE m.user_id = ? ORDER BY g.name",
                user_id,
            )
            policies = _names(
                tx,
                "SELECT p.name FROM attachments a JOIN policies p ON p.id = a.policy_id "
                "WHERE a.principal_type = 'user' AND a.principal_id = ? ORDER BY p.name",
                user_id,
            )
            keys = _names(
                tx, "SELECT access_key FROM access_keys WHERE user_id = ? ORDER BY created_at, access_key", user_id
            )
            pairs = _names(tx, "SELECT name FROM keypairs WHERE user_id = ? ORDER BY name", user_id)
        return UserDetail(
            user_id,
            name,
            domain,
            bool(row[0]),
            row[1] is not None,
            _opt_int(row[2]),
            int(row[3]),
            groups,
            policies,
            keys,
            pairs,
        )

    def list_groups(self, *, domain: str = DEFAULT_DOMAIN) -> list[GroupDetail]:
        with self.db.read() as tx:
            domain_id = names.domain_id(tx, domain)
            rows = tx.rows("SELECT id, name FROM groups_ WHERE domain_id = ? ORDER BY name", (domain_id,))
            return [_group(tx, r[0], r[1], domain) for r in rows]

    def show_group(self, name: str, *, domain: str = DEFAULT_DOMAIN) -> GroupDetail:
        with self.db.read() as tx:
            return _group(tx, names.group_id(tx, name, domain), name, domain)

    def project_grants(
        self, project: str, *, group: str | None = None, agency: str | None = None, domain: str = DEFAULT_DOMAIN
    ) -> tuple[str, ...]:
        """The names of the policies granted to ``group`` (or ``agency``) on ``project`` (by name or id)."""
        if (group is None) == (agency is None):
            raise ChangeRefused("name exactly one of a group or an agency")
        with self.db.read() as tx:
            project_id = project_at(tx, project, domain).id
            kind = "group" if group is not None else "agency"
            resolve = names.group_id if group is not None else names.agency_id
            principal_id = resolve(tx, group or agency or "", domain)
            rows = tx.rows(
                "SELECT p.name FROM project_attachments a JOIN policies p ON p.id = a.policy_id "
                "WHERE a.principal_type = ? AND a.principal_id = ? AND a.project_id = ? ORDER BY p.name",
                (kind, principal_id, project_id),
            )
        return tuple(str(r[0]) for r in rows)

    def show_access_key(self, access_key: str, *, domain: str | None = None) -> AccessKeyInfo:
        """A key by id, of a user of ``domain`` if given (access key ids are unique in the whole store)."""
        with self.db.read() as tx:
            return access_key_at(tx, access_key, domain)

    def list_access_keys(self, user: str, *, domain: str = DEFAULT_DOMAIN) -> list[AccessKeyInfo]:
        with self.db.read() as tx:
            user_id = names.user_id(tx, user, domain)
            rows = tx.rows(
                "SELECT access_key, status, created_at, last_used_at FROM access_keys WHERE user_id = ? "
                "ORDER BY created_at, access_key",
                (user_id,),
            )
        return [AccessKeyInfo(r[0], user, r[1], int(r[2]), _opt_int(r[3])) for r in rows]

    def list_policies(self, *, domain: str = DEFAULT_DOMAIN) -> list[PolicyDetail]:
        """The domain's policies, then the system policies (which every domain may attach)."""
        with self.db.read() as tx:
            domain_id = names.domain_id(tx, domain)
            rows = tx.rows(
                "SELECT id, name, domain_id, document FROM policies WHERE domain_id = ? OR domain_id IS NULL "
                "ORDER BY domain_id IS NULL, name",
                (domain_id,),
            )
            return [_policy(tx, row, domain, domain_id) for row in rows]

    def show_policy(self, name: str, *, domain: str = DEFAULT_DOMAIN) -> PolicyDetail:
        with self.db.read() as tx:
            domain_id = names.domain_id(tx, domain)
            row = tx.one(
                "SELECT id, name, domain_id, document FROM policies WHERE id = ?",
                (names.policy_id(tx, name, domain_id),),
            )
            assert row is not None
            return _policy(tx, row, domain, domain_id)

    def list_agencies(self, *, domain: str = DEFAULT_DOMAIN) -> list[Agency]:
        with self.db.read() as tx:
            domain_id = names.domain_id(tx, domain)
            rows = tx.rows("SELECT id FROM agencies WHERE domain_id = ? ORDER BY name", (domain_id,))
            return [agency_at(tx, r[0]) for r in rows]

    def show_agency(self, name: str, *, domain: str = DEFAULT_DOMAIN) -> Agency:
        with self.db.read() as tx:
            return agency_at(tx, names.agency_id(tx, name, domain))

    def list_workspaces(self, *, domain: str = DEFAULT_DOMAIN) -> list[WorkspaceInfo]:
        """The domain's workspaces and the shared default one (``"0"``)."""
        with self.db.read() as tx:
            domain_id = names.domain_id(tx, domain)
            rows = tx.rows(
                "SELECT id FROM workspaces WHERE domain_id = ? OR domain_id IS NULL "
                "ORDER BY domain_id IS NOT NULL, name",
                (domain_id,),
            )
            return [workspace_info(tx, r[0]) for r in rows]

    def show_workspace(self, name_or_id: str, *, domain: str = DEFAULT_DOMAIN) -> WorkspaceInfo:
        with self.db.read() as tx:
            return workspace_info(tx, names.workspace_id(tx, name_or_id, domain))

    def show_keypair(self, name: str, *, user: str, domain: str = DEFAULT_DOMAIN) -> KeyPair:
        with self.db.read() as tx:
            row = tx.one(
                "SELECT key_type, fingerprint, public_key, expires_at FROM keypairs WHERE user_id = ? AND name = ?",
                (names.user_id(tx, user, domain), name),
            )
        if row is None:
            raise NotFound(f"user {user!r} has no key pair {name!r}")
        return KeyPair(name, user, row[0], row[1], row[2], None if row[3] is None else int(row[3]))

    def show_whitelist(self, scope: WhitelistScope | str, name: str, *, domain: str = DEFAULT_DOMAIN) -> IpWhitelist:
        """The whitelist of a user, workspace or route (empty: every address allowed)."""
        scope = WhitelistScope(scope)
        with self.db.read() as tx:
            row = tx.one(
                "SELECT entries FROM whitelists WHERE scope = ? AND scope_id = ?",
                (scope.value, whitelist_scope_id(tx, scope, name, domain)),
            )
        return IpWhitelist() if row is None else IpWhitelist.parse(json.loads(row[0]))


def whitelist_scope_id(tx: Tx, scope: WhitelistScope, name: str, domain: str) -> str:
    """The id a whitelist is stored under: the user's or workspace's id, or the route's name."""
    if scope is WhitelistScope.USER:
        return names.user_id(tx, name, domain)
    if scope is WhitelistScope.WORKSPACE:
        return names.workspace_id(tx, name, domain)
    return check(ROUTE, "route", name, "an action or 'METHOD /path/template'")


def domain_summary(tx: Tx, domain_id: str, name: str) -> DomainSummary:
    counts = [
        int(tx.one(f"SELECT COUNT(*) FROM {table} WHERE domain_id = ?", (domain_id,))[0])  # type: ignore[index]  # noqa: S608 - fixed table names
        for _kind, table in CONTENT
    ]
    return DomainSummary(domain_id, name, *counts)


def access_key_at(tx: Tx, access_key: str, domain: str | None) -> AccessKeyInfo:
    row = tx.one(
        "SELECT u.name, k.status, k.created_at, k.last_used_at, d.name FROM access_keys k "
        "JOIN users u ON u.id = k.user_id JOIN domains d ON d.id = u.domain_id WHERE k.access_key = ?",
        (access_key,),
    )
    if row is None or (domain is not None and row[4] != domain):
        raise NotFound(f"no access key {access_key!r}" + ("" if domain is None else f" in domain {domain!r}"))
    return AccessKeyInfo(access_key, row[0], row[1], int(row[2]), _opt_int(row[3]))


def project_at(tx: Tx, name_or_id: str, domain: str) -> Project:
    """A project of ``domain`` by id or by name (the id first)."""
    row = tx.one(
        "SELECT p.id, p.name, p.domain_id, p.region FROM projects p JOIN domains d ON d.id = p.domain_id "
        "WHERE (p.id = ? OR p.name = ?) AND d.name = ? ORDER BY p.id = ? DESC LIMIT 1",
        (name_or_id, name_or_id, domain, name_or_id),
    )
    if row is None:
        raise NotFound(f"no project {name_or_id!r} in domain {domain!r}")
    return Project(row[0], row[1], row[2], row[3])


def agency_at(tx: Tx, agency_id: str) -> Agency:
    row = tx.one("SELECT name, domain_id, trust_domain, max_duration FROM agencies WHERE id = ?", (agency_id,))
    assert row is not None
    policies = _names(
        tx,
        "SELECT p.name FROM attachments a JOIN policies p ON p.id = a.policy_id "
        "WHERE a.principal_type = 'agency' AND a.principal_id = ? ORDER BY p.name",
        agency_id,
    )
    return Agency(agency_id, row[0], row[1], row[2], int(row[3]), policies)


def workspace_info(tx: Tx, workspace_id: str) -> WorkspaceInfo:
    """A workspace with its owner's name and its grants as ``user:NAME`` / ``group:NAME``."""
    row = tx.one(
        "SELECT w.name, w.auth_type, w.domain_id, u.name, w.created_at FROM workspaces w "
        "LEFT JOIN users u ON u.id = w.owner_id "
        "WHERE w.id = ?",
        (workspace_id,),
    )
    assert row is not None
    grants = tx.rows(
        "SELECT 'user:' || u.name FROM workspace_grants g JOIN users u ON u.id = g.principal_id "
        "WHERE g.workspace_id = ? AND g.principal_type = 'user' "
        "UNION ALL SELECT 'group:' || r.name FROM workspace_grants g JOIN groups_ r ON r.id = g.principal_id "
        "WHERE g.workspace_id = ? AND g.principal_type = 'group' ORDER BY 1",
        (workspace_id, workspace_id),
    )
    granted = tuple(str(g[0]) for g in grants)
    return WorkspaceInfo(workspace_id, row[0], row[1], row[2], row[3], granted, int(row[4]))


def _group(tx: Tx, group_id: str, name: str, domain: str) -> GroupDetail:
    users = _names(
        tx,
        "SELECT u.name FROM group_members m JOIN users u ON u.id = m.user_id WHERE m.group_id = ? ORDER BY u.name",
        group_id,
    )
    policies = _names(
        tx,
        "SELECT p.name FROM attachments a JOIN policies p ON p.id = a.policy_id "
        "WHERE a.principal_type = 'group' AND a.principal_id = ? ORDER BY p.name",
        group_id,
    )
    return GroupDetail(group_id, name, domain, users, policies)


def _policy(tx: Tx, row: Row, domain: str, domain_id: str) -> PolicyDetail:
    """A policy with its attachments within ``domain`` (a system policy is attached in many domains)."""
    policy_id = row[0]
    attached = tx.rows(
        "SELECT a.principal_type || ':' || COALESCE(u.name, g.name, y.name) FROM attachments a "
        "LEFT JOIN users u ON a.principal_type = 'user' AND u.id = a.principal_id AND u.domain_id = ? "
        "LEFT JOIN groups_ g ON a.principal_type = 'group' AND g.id = a.principal_id AND g.domain_id = ? "
        "LEFT JOIN agencies y ON a.principal_type = 'agency' AND y.id = a.principal_id AND y.domain_id = ? "
        "WHERE a.policy_id = ? AND COALESCE(u.name, g.name, y.name) IS NOT NULL ORDER BY 1",
        (domain_id, domain_id, domain_id, policy_id),
    )
    # Grants on a project too, as ``group:NAME@PROJECT``: a grant that is in force must show where it hangs.
    on_projects = tx.rows(
        "SELECT a.principal_type || ':' || COALESCE(g.name, y.name) || '@' || r.name FROM project_attachments a "
        "JOIN projects r ON r.id = a.project_id AND r.domain_id = ? "
        "LEFT JOIN groups_ g ON a.principal_type = 'group' AND g.id = a.principal_id "
        "LEFT JOIN agencies y ON a.principal_type = 'agency' AND y.id = a.principal_id "
        "WHERE a.policy_id = ? AND COALESCE(g.name, y.name) IS NOT NULL ORDER BY 1",
        (domain_id, policy_id),
    )
    named = tuple(str(a[0]) for a in [*attached, *on_projects])
    return PolicyDetail(policy_id, row[1], None if row[2] is None else domain, named, str(row[3]))


def _names(tx: Tx, sql: str, key: str) -> tuple[str, ...]:
    return tuple(str(r[0]) for r in tx.rows(sql, (key,)))


def _opt_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]
