"""The reads the request pipeline needs, each implemented once and returning the store revision it read at.

:class:`~authmw.store.cached.CachedIdentity` keeps a value only if no change was seen since its revision, so
every ``read_*`` takes the revision and the value from one snapshot. The same reads without the revision make
the store itself an uncached :class:`~authmw.identity.IdentitySource` (the CLI's one-off checks and the tests).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Concatenate, ParamSpec, TypeVar

from authmw.clientaddr import IpWhitelist
from authmw.errors import StoreUnavailable
from authmw.identity import ADMIN_GROUP
from authmw.models import AccessKey, Principal, WhitelistScope, Workspace
from authmw.policy import PolicySet, parse_policy
from authmw.store.base import StoreBase
from authmw.store.database import Tx
from authmw.store.keys import access_key_context
from authmw.store.notebook_reads import workspace_at
from authmw.store.records import Project
from authmw.store.secrets import SealError

__all__ = ["Compiler", "IdentityReads", "attached", "compile_policies", "workspace_at"]

#: Turns the (id, name, document) of a principal's policies into the set it is judged by (the cache shares sets).
Compiler = Callable[[tuple[tuple[str, str, str], ...]], PolicySet]

_S = TypeVar("_S")
_P = ParamSpec("_P")
_T = TypeVar("_T")


def compile_policies(policies: tuple[tuple[str, str, str], ...]) -> PolicySet:
    # Stored documents are read as stored: the wildcard limits apply when a policy is created, not to old ones, and
    # the size limit to the document as written (a grant on a project adds ~70 characters per statement to it).
    return PolicySet(
        parse_policy(document, name=name, wildcard_limits=False, size_limit=False) for _id, name, document in policies
    )


def _value(read: Callable[Concatenate[_S, _P], tuple[int, _T]]) -> Callable[Concatenate[_S, _P], _T]:
    """``read`` as an uncached IdentitySource answers: the value without its revision (no second implementation)."""

    def value(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return read(self, *args, **kwargs)[1]

    value.__doc__ = read.__doc__
    return value


class IdentityReads(StoreBase):
    """The pipeline's reads: ``read_x`` returns ``(revision, x)``, and ``x`` is the same read without the revision;
    and its one write, :meth:`record_key_use`, which is bookkeeping, not a change."""

    def revision(self) -> int:
        """A counter every change increments (what caches poll)."""
        row = self.db.query(_REVISION)
        return int(row[0]) if row else 0

    def read_access_key(self, access_key: str) -> tuple[int, AccessKey | None]:
        """The active key of an enabled user, with its secret; None otherwise (unknown ≡ disabled). One statement,
        one round trip: this is what a cache miss of the hot path costs."""
        row = self.db.query(_KEY_LOOKUP, (access_key,))
        if row is None:
            raise StoreUnavailable("the store has no revision row: not initialised")
        revision, sealed, user_id = row
        if sealed is None:
            return int(revision), None
        try:
            secret = self.keyring.open(sealed, access_key_context(access_key, user_id)).decode()
        except (SealError, UnicodeDecodeError) as exc:
            raise StoreUnavailable(f"access key secret cannot be unsealed: {exc}") from None
        return int(revision), AccessKey(access_key, secret, user_id)

    def read_principal(self, user_id: str, compile_: Compiler = compile_policies) -> tuple[int, Principal | None]:
        """An enabled user with the policies of the user and its groups (None if unknown or disabled)."""
        with self.db.read() as tx:
            revision = _revision_at(tx)
            row = tx.one(
                "SELECT u.name, u.domain_id, d.name, u.password_changed_at FROM users u "
                "JOIN domains d ON d.id = u.domain_id "
                "WHERE u.id = ? AND u.enabled = 1",
                (user_id,),
            )
            if row is None:
                return revision, None
            groups = tx.rows(
                "SELECT g.id, g.name FROM group_members m JOIN groups_ g ON g.id = m.group_id WHERE m.user_id = ?",
                (user_id,),
            )
            policies = attached(tx, [("user", user_id)] + [("group", g[0]) for g in groups])
        principal = Principal(
            user_id=user_id,
            user_name=row[0],
            domain_id=row[1],
            domain_name=row[2],
            groups=frozenset(g[0] for g in groups),
            policies=compile_(policies),
            is_admin=any(g[1] == ADMIN_GROUP for g in groups),
            password_changed_at=None if row[3] is None else int(row[3]),
        )
        return revision, principal

    def read_agency(self, agency_id: str, compile_: Compiler = compile_policies) -> tuple[int, Principal | None]:
        """An agency as the principal its sessions act as: its domain and exactly its own policies."""
        with self.db.read() as tx:
            revision = _revision_at(tx)
            row = tx.one(
                "SELECT a.name, a.domain_id, d.name FROM agencies a JOIN domains d ON d.id = a.domain_id "
                "WHERE a.id = ?",
                (agency_id,),
            )
            if row is None:
                return revision, None
            policies = attached(tx, [("agency", agency_id)])
        return revision, Principal(agency_id, row[0], row[1], row[2], frozenset(), compile_(policies))

    def read_user_id(self, domain: str, name: str) -> tuple[int, str | None]:
        """The id of the user ``name`` of the domain named ``domain`` (how an external token names a user)."""
        with self.db.read() as tx:
            row = tx.one(
                "SELECT u.id FROM users u JOIN domains d ON d.id = u.domain_id WHERE u.name = ? AND d.name = ?",
                (name, domain),
            )
            return _revision_at(tx), None if row is None else str(row[0])

    def read_project(self, project_id: str) -> tuple[int, Project | None]:
        with self.db.read() as tx:
            revision = _revision_at(tx)
            row = tx.one("SELECT name, domain_id, region FROM projects WHERE id = ?", (project_id,))
        return revision, None if row is None else Project(project_id, row[0], row[1], row[2])

    def read_token_revoked(self, token_id: str) -> tuple[int, bool]:
        with self.db.read() as tx:
            return _revision_at(tx), tx.one("SELECT 1 FROM revoked_tokens WHERE jti = ?", (token_id,)) is not None

    def read_workspace(self, workspace_id: str) -> tuple[int, Workspace | None]:
        with self.db.read() as tx:
            return _revision_at(tx), workspace_at(tx, workspace_id)

    def read_whitelist(self, scope: WhitelistScope, scope_id: str) -> tuple[int, IpWhitelist]:
        with self.db.read() as tx:
            revision = _revision_at(tx)
            row = tx.one("SELECT entries FROM whitelists WHERE scope = ? AND scope_id = ?", (scope.value, scope_id))
        return revision, IpWhitelist() if row is None else IpWhitelist.parse(json.loads(row[0]))

    def read_whitelist_scopes(self) -> tuple[int, frozenset[WhitelistScope]]:
        """The scopes that have at least one whitelist: the hot path skips the lookups of the others."""
        with self.db.read() as tx:
            revision = _revision_at(tx)
            rows = tx.rows("SELECT DISTINCT scope FROM whitelists")
        return revision, frozenset(WhitelistScope(row[0]) for row in rows)

    def record_key_use(self, used: Mapping[str, int]) -> None:
        """Record when keys were last used (epoch seconds), never moving a time back. Not a change: the revision
        stays, so no cache anywhere is dropped for it (callers batch it, at most once a minute)."""
        with self.db.write(bump=False) as tx:
            tx.run_many(
                "UPDATE access_keys SET last_used_at = ? WHERE access_key = ? "
                "AND (last_used_at IS NULL OR last_used_at < ?)",
                [(when, key, when) for key, when in sorted(used.items())],
            )

    get_access_key = _value(read_access_key)
    principal = _value(read_principal)
    agency = _value(read_agency)
    user_id = _value(read_user_id)
    project = _value(read_project)
    token_revoked = _value(read_token_revoked)
    workspace = _value(read_workspace)
    whitelist = _value(read_whitelist)
    whitelist_scopes = _value(read_whitelist_scopes)


_REVISION = "SELECT value FROM authmw_meta WHERE name = 'revision'"
# The revision and the key in one statement (so one snapshot): an unknown, inactive or disabled user's key
# still returns the revision row, with NULLs.
_KEY_LOOKUP = (
    "SELECT m.value, k.secret_sealed, k.user_id FROM authmw_meta m "
    "LEFT JOIN (SELECT a.secret_sealed, a.user_id FROM access_keys a JOIN users u ON u.id = a.user_id "
    "WHERE a.access_key = ? AND a.status = 'active' AND u.enabled = 1) k ON 1 = 1 "
    "WHERE m.name = 'revision'"
)


def _revision_at(tx: Tx) -> int:
    """The store revision of the snapshot ``tx`` reads."""
    row = tx.one(_REVISION)
    return int(row[0]) if row else 0


def attached(tx: Tx, principals: Sequence[tuple[str, str]]) -> tuple[tuple[str, str, str], ...]:
    """(id, name, document) of the policies attached to any of ``principals``, each once, ordered by id; a policy
    granted on a project is there as :func:`scoped_to_project` makes it (id ``<policy id>@<project id>``)."""
    found: dict[str, tuple[str, str, str]] = {}
    for kind, principal_id in principals:
        for row in tx.rows(
            "SELECT p.id, p.name, p.document FROM attachments a JOIN policies p ON p.id = a.policy_id "
            "WHERE a.principal_type = ? AND a.principal_id = ?",
            (kind, principal_id),
        ):
            found[row[0]] = (row[0], row[1], row[2])
        for row in tx.rows(
            "SELECT p.id, p.name, p.document, a.project_id FROM project_attachments a "
            "JOIN policies p ON p.id = a.policy_id WHERE a.principal_type = ? AND a.principal_id = ?",
            (kind, principal_id),
        ):
            document = scoped_to_project(row[2], row[3])
            if document is not None:
                found[f"{row[0]}@{row[3]}"] = (f"{row[0]}@{row[3]}", row[1], document)
    return tuple(found[key] for key in sorted(found))


def scoped_to_project(document: str, project_id: str) -> str | None:
    """A policy document granted on one project: each statement also requires ``g:ProjectId`` to be
    ``project_id`` (ANDed with a ``StringEquals`` on it the statement has: a statement naming other projects only
    never applies, and a document left with none is None). Outside a project's requests none of it applies, Deny
    statements included, as IAM applies a project-level grant."""
    policy = json.loads(document)
    kept = []
    for statement in policy.get("Statement", []):
        condition = {operator: dict(keys) for operator, keys in (statement.get("Condition") or {}).items()}
        equals = condition.setdefault("StringEquals", {})
        key = next((k for k in equals if k.lower() == "g:projectid"), "g:ProjectId")
        named = equals.get(key)
        if named is not None and project_id not in ([named] if isinstance(named, str) else named):
            continue
        equals[key] = [project_id]
        kept.append({**statement, "Condition": condition})
    return json.dumps({**policy, "Statement": kept}) if kept else None
