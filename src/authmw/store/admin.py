"""The administration verbs (the CLI's and the tests'): every change is one write transaction.

Names given to the verbs are resolved inside a domain (``default`` unless said otherwise). Every change runs in
one write transaction that first bumps the store revision, so either all of it is applied or none, writers
never interleave, and caches in every process sharing the database see that something changed.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable

from authmw.clientaddr import IpWhitelist
from authmw.errors import ChangeRefused, InvalidPolicy, NotFound
from authmw.models import AuthType, WhitelistScope, Workspace
from authmw.policy import parse_policy, system_policies
from authmw.policy.builtin import system_policy_documents
from authmw.sessions import MAX_DURATION
from authmw.store import keypairs, names
from authmw.store.base import StoreBase, new_id
from authmw.store.database import Tx
from authmw.store.inventory import (
    CONTENT,
    access_key_at,
    agency_at,
    domain_summary,
    project_at,
    whitelist_scope_id,
    workspace_info,
)
from authmw.store.keys import access_key_context, sealer
from authmw.store.reads import workspace_at
from authmw.store.records import (
    AccessKeyInfo,
    Agency,
    Domain,
    DomainSummary,
    Group,
    KeyPair,
    NewAccessKey,
    NewKeyPair,
    PolicyInfo,
    Project,
    User,
    WorkspaceInfo,
)
from authmw.store.rules import (
    ACCESS_KEY,
    ALPHANUM,
    MAX_KEYS_PER_USER,
    POLICY_NAME,
    SECRET,
    SECRET_ALPHABET,
    check,
    check_max_duration,
    check_name,
    check_password,
    check_workspace_name,
)
from authmw.store.secrets import hash_password, verify_password
from authmw.workspaces import DEFAULT_WORKSPACE_ID

__all__ = ["DEFAULT_DOMAIN", "Administration", "ensure_system_policies", "system_policy_id"]

DEFAULT_DOMAIN = names.DEFAULT_DOMAIN


class Administration(StoreBase):
    """Domains, projects, users, groups, access keys, policies, agencies, workspaces, key pairs, whitelists,
    and the token endpoint's password checks and revocations."""

    # -- domains, projects, users, groups -----------------------------------------------------------------

    def create_domain(self, name: str) -> Domain:
        check_name("domain", name)
        with self.db.write() as tx:
            if tx.one("SELECT 1 FROM domains WHERE name = ?", (name,)):
                raise ChangeRefused(f"domain {name!r} already exists")
            domain = Domain(new_id(), name)
            tx.run("INSERT INTO domains VALUES (?, ?, ?)", (domain.id, name, self._now()))
        return domain

    def list_domains(self) -> list[Domain]:
        with self.db.read() as tx:
            return [Domain(r[0], r[1]) for r in tx.rows("SELECT id, name FROM domains ORDER BY name")]

    def delete_domain(self, name: str) -> DomainSummary:
        """Delete an empty domain. Refused while it holds anything (deleting a whole tenant by accident is
        worse than a few more commands), while an agency trusts it (a new domain of that name would inherit the
        trust), and for ``default``, which every command names unless told otherwise."""
        if name == DEFAULT_DOMAIN:
            raise ChangeRefused(f"the domain {DEFAULT_DOMAIN!r} cannot be deleted")
        with self.db.write() as tx:
            summary = domain_summary(tx, names.domain_id(tx, name), name)
            held = [f"{getattr(summary, kind)} {kind}" for kind, _table in CONTENT if getattr(summary, kind)]
            if held:
                raise ChangeRefused(f"domain {name!r} still holds {', '.join(held)}: delete them first")
            trusting = tx.rows(
                "SELECT a.name, d.name FROM agencies a JOIN domains d ON d.id = a.domain_id WHERE a.trust_domain = ? "
                "ORDER BY d.name, a.name",
                (name,),
            )
            if trusting:
                agencies = ", ".join(f"{r[0]!r} of {r[1]!r}" for r in trusting)
                raise ChangeRefused(f"domain {name!r} is trusted by agency {agencies}: delete or update them first")
            tx.run("DELETE FROM domains WHERE id = ?", (summary.id,))
        return summary

    def create_project(self, name: str, *, domain: str = DEFAULT_DOMAIN, region: str | None = None) -> Project:
        check_name("project", name)
        region = check_name("region", region or name.partition("_")[0])
        with self.db.write() as tx:
            domain_id = names.domain_id(tx, domain)
            if tx.one("SELECT 1 FROM projects WHERE domain_id = ? AND name = ?", (domain_id, name)):
                raise ChangeRefused(f"project {name!r} already exists in domain {domain!r}")
            project = Project(new_id(), name, domain_id, region)
            tx.run("INSERT INTO projects VALUES (?, ?, ?, ?, ?)", (project.id, domain_id, name, region, self._now()))
        return project

    def find_project(self, name_or_id: str, *, domain: str = DEFAULT_DOMAIN) -> Project:
        """A project of ``domain`` by id or by name."""
        with self.db.read() as tx:
            return project_at(tx, name_or_id, domain)

    def delete_project(self, name_or_id: str, *, domain: str = DEFAULT_DOMAIN) -> Project:
        """Delete a project and the policies granted on it; tokens scoped to it are refused from then on (their
        project is gone)."""
        with self.db.write() as tx:
            project = project_at(tx, name_or_id, domain)
            tx.run("DELETE FROM project_attachments WHERE project_id = ?", (project.id,))
            tx.run("DELETE FROM projects WHERE id = ?", (project.id,))
        return project

    def create_user(self, name: str, *, domain: str = DEFAULT_DOMAIN, password: str | None = None) -> User:
        check_name("user", name)
        hashed = None if password is None else hash_password(check_password(password))
        with self.db.write() as tx:
            domain_id = names.domain_id(tx, domain)
            if tx.one("SELECT 1 FROM users WHERE domain_id = ? AND name = ?", (domain_id, name)):
                raise ChangeRefused(f"user {name!r} already exists in domain {domain!r}")
            user = User(new_id(), name, domain_id, True)
            now = self._now()
            tx.run(
                "INSERT INTO users VALUES (?, ?, ?, 1, ?, ?, ?)",
                (user.id, domain_id, name, hashed, None if hashed is None else now, now),
            )
        return user

    def set_user_enabled(self, name: str, enabled: bool, *, domain: str = DEFAULT_DOMAIN) -> User:
        return self.update_user(name, domain=domain, enabled=enabled)

    def update_user(
        self, name: str, *, domain: str = DEFAULT_DOMAIN, enabled: bool | None = None, password: str | None = None
    ) -> User:
        """Enable or disable a user and/or set its password, in one change (None: left as it is)."""
        hashed = None if password is None else hash_password(check_password(password))
        with self.db.write() as tx:
            user_id = names.user_id(tx, name, domain)
            if enabled is not None:
                tx.run("UPDATE users SET enabled = ? WHERE id = ?", (int(enabled), user_id))
            if hashed is not None:
                # Tokens carry whole seconds: the change covers the whole second it happens in, so a token issued
                # earlier in that second is stale too (token issuers start new tokens at this second: not_before).
                tx.run(
                    "UPDATE users SET password_hash = ?, password_changed_at = ? WHERE id = ?",
                    (hashed, self._now() + 1, user_id),
                )
            row = tx.one("SELECT domain_id, enabled FROM users WHERE id = ?", (user_id,))
        assert row is not None
        return User(user_id, name, row[0], bool(row[1]))

    def delete_user(self, name: str, *, domain: str = DEFAULT_DOMAIN) -> User:
        """Delete a user with its keys, key pairs, memberships, attachments, grants, whitelist and revoked tokens.
        Refused while it owns a workspace (a workspace must not lose its owner silently)."""
        with self.db.write() as tx:
            user_id = names.user_id(tx, name, domain)
            owned = [r[0] for r in tx.rows("SELECT name FROM workspaces WHERE owner_id = ? ORDER BY name", (user_id,))]
            if owned:
                raise ChangeRefused(
                    f"user {name!r} owns workspace {', '.join(map(repr, owned))}: "
                    "give it another owner (workspace update --owner) or delete it first"
                )
            row = tx.one("SELECT domain_id, enabled FROM users WHERE id = ?", (user_id,))
            assert row is not None
            for sql in (
                "DELETE FROM access_keys WHERE user_id = ?",
                "DELETE FROM keypairs WHERE user_id = ?",
                "DELETE FROM group_members WHERE user_id = ?",
                "DELETE FROM attachments WHERE principal_type = 'user' AND principal_id = ?",
                "DELETE FROM workspace_grants WHERE principal_type = 'user' AND principal_id = ?",
                "DELETE FROM whitelists WHERE scope = 'user' AND scope_id = ?",
                "DELETE FROM revoked_tokens WHERE user_id = ?",
                "DELETE FROM users WHERE id = ?",
            ):
                tx.run(sql, (user_id,))
        return User(user_id, name, row[0], bool(row[1]))

    def check_password(self, name: str, password: str, *, domain: str) -> tuple[User, str] | None:
        """The enabled user ``name`` of ``domain`` (a name or an id) and its domain's name if ``password`` is
        theirs, else None.

        Costs one scrypt whatever the outcome (unknown user, disabled, no password), so the answer's timing
        does not tell which; callers must limit attempts before calling (it is a CPU-heavy check).
        """
        with self.db.read() as tx:
            row = tx.one(
                "SELECT u.id, u.name, u.domain_id, u.enabled, u.password_hash, d.name FROM users u "
                "JOIN domains d ON d.id = u.domain_id WHERE u.name = ? AND (d.name = ? OR d.id = ?)",
                (name, domain, domain),
            )
        matches = verify_password(password, None if row is None else row[4])
        if row is None or not matches or not row[3]:
            return None
        return User(row[0], row[1], row[2], True), str(row[5])

    def list_users(self, *, domain: str | None = None) -> list[User]:
        sql = "SELECT u.id, u.name, u.domain_id, u.enabled FROM users u JOIN domains d ON d.id = u.domain_id"
        with self.db.read() as tx:
            if domain is None:
                rows = tx.rows(sql + " ORDER BY d.name, u.name")
            else:
                names.domain_id(tx, domain)
                rows = tx.rows(sql + " WHERE d.name = ? ORDER BY u.name", (domain,))
        return [User(r[0], r[1], r[2], bool(r[3])) for r in rows]

    def find_user(self, name: str, *, domain: str = DEFAULT_DOMAIN) -> User:
        with self.db.read() as tx:
            row = tx.one(
                "SELECT u.id, u.domain_id, u.enabled FROM users u JOIN domains d ON d.id = u.domain_id "
                "WHERE u.name = ? AND d.name = ?",
                (name, domain),
            )
        if row is None:
            raise NotFound(f"no user {name!r} in domain {domain!r}")
        return User(row[0], name, row[1], bool(row[2]))

    def create_group(self, name: str, *, domain: str = DEFAULT_DOMAIN) -> Group:
        check_name("group", name)
        with self.db.write() as tx:
            domain_id = names.domain_id(tx, domain)
            if tx.one("SELECT 1 FROM groups_ WHERE domain_id = ? AND name = ?", (domain_id, name)):
                raise ChangeRefused(f"group {name!r} already exists in domain {domain!r}")
            group = Group(new_id(), name, domain_id)
            tx.run("INSERT INTO groups_ VALUES (?, ?, ?, ?)", (group.id, domain_id, name, self._now()))
        return group

    def add_user_to_group(self, group: str, user: str, *, domain: str = DEFAULT_DOMAIN) -> None:
        with self.db.write() as tx:
            group_id = names.group_id(tx, group, domain)
            user_id = names.user_id(tx, user, domain)
            if tx.one("SELECT 1 FROM group_members WHERE group_id = ? AND user_id = ?", (group_id, user_id)):
                raise ChangeRefused(f"user {user!r} is already in group {group!r}")
            tx.run("INSERT INTO group_members VALUES (?, ?)", (group_id, user_id))

    def remove_user_from_group(self, group: str, user: str, *, domain: str = DEFAULT_DOMAIN) -> None:
        with self.db.write() as tx:
            group_id = names.group_id(tx, group, domain)
            user_id = names.user_id(tx, user, domain)
            if not tx.run("DELETE FROM group_members WHERE group_id = ? AND user_id = ?", (group_id, user_id)):
                raise NotFound(f"user {user!r} is not in group {group!r}")

    def delete_group(self, name: str, *, domain: str = DEFAULT_DOMAIN) -> Group:
        """Delete a group with its memberships, policy attachments and workspace grants."""
        with self.db.write() as tx:
            group_id = names.group_id(tx, name, domain)
            domain_id = names.domain_id(tx, domain)
            for sql in (
                "DELETE FROM group_members WHERE group_id = ?",
                "DELETE FROM attachments WHERE principal_type = 'group' AND principal_id = ?",
                "DELETE FROM project_attachments WHERE principal_type = 'group' AND principal_id = ?",
                "DELETE FROM workspace_grants WHERE principal_type = 'group' AND principal_id = ?",
                "DELETE FROM groups_ WHERE id = ?",
            ):
                tx.run(sql, (group_id,))
        return Group(group_id, name, domain_id)

    # -- access keys --------------------------------------------------------------------------------------

    def create_access_key(
        self,
        user: str,
        *,
        domain: str = DEFAULT_DOMAIN,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> NewAccessKey:
        """A new active key (at most two per user); the returned secret is never shown again."""
        if (access_key is None) != (secret_key is None):
            raise ChangeRefused("give both an access key and a secret key, or neither")
        if access_key is None or secret_key is None:
            access_key = "".join(secrets.choice(ALPHANUM) for _ in range(20))
            secret_key = "".join(secrets.choice(SECRET_ALPHABET) for _ in range(40))
        else:
            check(ACCESS_KEY, "access key", access_key, "8-128 letters and digits")
            if not SECRET.fullmatch(secret_key):
                raise ChangeRefused("invalid secret key: 16-256 printable ASCII characters, no spaces")
        with self.db.write() as tx:
            user_id = names.user_id(tx, user, domain)
            sealed = sealer(tx, self.keyring)(secret_key.encode(), access_key_context(access_key, user_id))
            count = tx.one("SELECT COUNT(*) FROM access_keys WHERE user_id = ?", (user_id,))
            if count and int(count[0]) >= MAX_KEYS_PER_USER:
                raise ChangeRefused(f"user {user!r} already has {MAX_KEYS_PER_USER} access keys: delete one first")
            if tx.one("SELECT 1 FROM access_keys WHERE access_key = ?", (access_key,)):
                raise ChangeRefused("that access key already exists")
            tx.run(
                "INSERT INTO access_keys (access_key, user_id, secret_sealed, status, created_at) "
                "VALUES (?, ?, ?, 'active', ?)",
                (access_key, user_id, sealed, self._now()),
            )
        return NewAccessKey(access_key, secret_key, user, "active")

    def set_access_key_status(self, access_key: str, active: bool, *, domain: str | None = None) -> AccessKeyInfo:
        """Make a key active or inactive; with ``domain``, only a key of a user of that domain."""
        status = "active" if active else "inactive"
        with self.db.write() as tx:
            access_key_at(tx, access_key, domain)
            tx.run("UPDATE access_keys SET status = ? WHERE access_key = ?", (status, access_key))
            return access_key_at(tx, access_key, domain)

    def delete_access_key(self, access_key: str, *, domain: str | None = None) -> AccessKeyInfo:
        """Delete a key for good; with ``domain``, only a key of a user of that domain."""
        with self.db.write() as tx:
            info = access_key_at(tx, access_key, domain)
            tx.run("DELETE FROM access_keys WHERE access_key = ?", (access_key,))
        return info

    # -- policies and agencies ----------------------------------------------------------------------------

    def create_policy(self, name: str, document: str | bytes, *, domain: str = DEFAULT_DOMAIN) -> PolicyInfo:
        """Validate ``document`` and store it as the domain's policy ``name``."""
        check(POLICY_NAME, "policy name", name, "1-64 of letters, digits, spaces, _ . @ -")
        text = _policy_text(name, document)
        with self.db.write() as tx:
            domain_id = names.domain_id(tx, domain)
            if tx.one("SELECT 1 FROM policies WHERE domain_id = ? AND name = ?", (domain_id, name)):
                raise ChangeRefused(f"policy {name!r} already exists in domain {domain!r}")
            info = PolicyInfo(new_id(), name, domain_id)
            tx.run("INSERT INTO policies VALUES (?, ?, ?, ?, ?)", (info.id, domain_id, name, text, self._now()))
        return info

    def update_policy(self, name: str, document: str | bytes, *, domain: str = DEFAULT_DOMAIN) -> PolicyInfo:
        """Replace the document of a domain's policy (validated as at creation); its attachments stay."""
        text = _policy_text(name, document)
        with self.db.write() as tx:
            info = _own_policy(tx, name, domain)
            tx.run("UPDATE policies SET document = ? WHERE id = ?", (text, info.id))
        return info

    def detach_policy(
        self,
        name: str,
        *,
        group: str | None = None,
        user: str | None = None,
        agency: str | None = None,
        domain: str = DEFAULT_DOMAIN,
        project: str | None = None,
    ) -> None:
        """Detach the domain's (or a system) policy from exactly one group, user or agency (from a group or an
        agency on ``project`` only, given one)."""
        with self.db.write() as tx:
            key, kind, target = _attachment(tx, name, group, user, agency, domain=domain)
            if project is not None:
                scoped = (*key, project_at(tx, project, domain).id)
                if not tx.run(
                    "DELETE FROM project_attachments "
                    "WHERE policy_id = ? AND principal_type = ? AND principal_id = ? AND project_id = ?",
                    scoped,
                ):
                    raise NotFound(f"policy {name!r} is not granted to {kind} {target!r} on project {project!r}")
                return
            if not tx.run(
                "DELETE FROM attachments WHERE policy_id = ? AND principal_type = ? AND principal_id = ?", key
            ):
                raise NotFound(f"policy {name!r} is not attached to {kind} {target!r}")

    def delete_policy(self, name: str, *, domain: str = DEFAULT_DOMAIN, force: bool = False) -> PolicyInfo:
        """Delete a domain's policy; refused while attached unless ``force``, which detaches it everywhere."""
        with self.db.write() as tx:
            info = _own_policy(tx, name, domain)
            count = tx.one(
                "SELECT (SELECT COUNT(*) FROM attachments WHERE policy_id = ?) "
                "+ (SELECT COUNT(*) FROM project_attachments WHERE policy_id = ?)",
                (info.id, info.id),
            )
            if count and int(count[0]) and not force:
                raise ChangeRefused(
                    f"policy {name!r} is attached to {int(count[0])} principal(s): detach it first, or --force"
                )
            tx.run("DELETE FROM attachments WHERE policy_id = ?", (info.id,))
            tx.run("DELETE FROM project_attachments WHERE policy_id = ?", (info.id,))
            tx.run("DELETE FROM policies WHERE id = ?", (info.id,))
        return info

    def attach_policy(
        self,
        name: str,
        *,
        group: str | None = None,
        user: str | None = None,
        agency: str | None = None,
        domain: str = DEFAULT_DOMAIN,
        project: str | None = None,
    ) -> None:
        """Attach the domain's (or a system) policy to exactly one group, user or agency; given a ``project`` (a
        group or an agency only, as IAM grants), it applies to requests in that project only."""
        with self.db.write() as tx:
            key, kind, target = _attachment(tx, name, group, user, agency, domain=domain)
            if project is not None:
                if kind == "user":
                    raise ChangeRefused("a policy is granted on a project to a group or an agency, not to a user")
                scoped = (*key, project_at(tx, project, domain).id)
                if tx.one(
                    "SELECT 1 FROM project_attachments "
                    "WHERE policy_id = ? AND principal_type = ? AND principal_id = ? AND project_id = ?",
                    scoped,
                ):
                    raise ChangeRefused(f"policy {name!r} is already granted to {kind} {target!r} on {project!r}")
                tx.run("INSERT INTO project_attachments VALUES (?, ?, ?, ?)", scoped)
                return
            if tx.one("SELECT 1 FROM attachments WHERE policy_id = ? AND principal_type = ? AND principal_id = ?", key):
                raise ChangeRefused(f"policy {name!r} is already attached to {kind} {target!r}")
            tx.run("INSERT INTO attachments VALUES (?, ?, ?)", key)

    def create_agency(
        self,
        name: str,
        *,
        trust: str,
        domain: str = DEFAULT_DOMAIN,
        policies: Iterable[str] = (),
        max_duration: int = MAX_DURATION,
    ) -> Agency:
        """An agency of ``domain`` that the domain ``trust`` (e.g. ``op_svc_modelarts``) may assume."""
        check_name("agency", name)
        check_name("trusted domain", trust)
        check_max_duration(max_duration)
        policy_names = tuple(dict.fromkeys(policies))
        with self.db.write() as tx:
            domain_id = names.domain_id(tx, domain)
            if tx.one("SELECT 1 FROM agencies WHERE domain_id = ? AND name = ?", (domain_id, name)):
                raise ChangeRefused(f"agency {name!r} already exists in domain {domain!r}")
            agency = Agency(new_id(), name, domain_id, trust, max_duration, policy_names)
            tx.run(
                "INSERT INTO agencies VALUES (?, ?, ?, ?, ?, ?)",
                (agency.id, domain_id, name, trust, max_duration, self._now()),
            )
            for policy in policy_names:
                tx.run(
                    "INSERT INTO attachments VALUES (?, 'agency', ?)",
                    (names.policy_id(tx, policy, domain_id), agency.id),
                )
        return agency

    def find_agency(self, name: str, *, domain: str) -> tuple[Agency, str]:
        """An agency by name in the domain named (or with the id) ``domain``, and that domain's name."""
        with self.db.read() as tx:
            row = tx.one(
                "SELECT a.id, a.domain_id, a.trust_domain, a.max_duration, d.name FROM agencies a "
                "JOIN domains d ON d.id = a.domain_id WHERE a.name = ? AND (d.name = ? OR d.id = ?)",
                (name, domain, domain),
            )
        if row is None:
            raise NotFound(f"no agency {name!r} in domain {domain!r}")
        return Agency(row[0], name, row[1], row[2], int(row[3])), str(row[4])

    def update_agency(
        self, name: str, *, domain: str = DEFAULT_DOMAIN, trust: str | None = None, max_duration: int | None = None
    ) -> Agency:
        """Change whom an agency trusts and/or its maximum session (sessions already issued keep theirs)."""
        if trust is not None:
            check_name("trusted domain", trust)
        if max_duration is not None:
            check_max_duration(max_duration)
        with self.db.write() as tx:
            agency_id = names.agency_id(tx, name, domain)
            if trust is not None:
                tx.run("UPDATE agencies SET trust_domain = ? WHERE id = ?", (trust, agency_id))
            if max_duration is not None:
                tx.run("UPDATE agencies SET max_duration = ? WHERE id = ?", (max_duration, agency_id))
            return agency_at(tx, agency_id)

    def delete_agency(self, name: str, *, domain: str = DEFAULT_DOMAIN) -> Agency:
        """Delete an agency and its attachments; its live sessions are refused from then on."""
        with self.db.write() as tx:
            agency = agency_at(tx, names.agency_id(tx, name, domain))
            tx.run("DELETE FROM attachments WHERE principal_type = 'agency' AND principal_id = ?", (agency.id,))
            tx.run("DELETE FROM project_attachments WHERE principal_type = 'agency' AND principal_id = ?", (agency.id,))
            tx.run("DELETE FROM agencies WHERE id = ?", (agency.id,))
        return agency

    # -- workspaces ---------------------------------------------------------------------------------------

    def create_workspace(
        self,
        name: str,
        *,
        domain: str = DEFAULT_DOMAIN,
        auth_type: str = "PUBLIC",
        owner: str | None = None,
        grant_users: Iterable[str] = (),
        grant_groups: Iterable[str] = (),
    ) -> WorkspaceInfo:
        check_workspace_name(name)
        try:
            kind = AuthType(auth_type.upper())
        except ValueError:
            raise ChangeRefused("--auth-type must be PUBLIC, PRIVATE or INTERNAL") from None
        users, groups = tuple(dict.fromkeys(grant_users)), tuple(dict.fromkeys(grant_groups))
        if (users or groups) and kind is not AuthType.INTERNAL:
            raise ChangeRefused("grants apply to INTERNAL workspaces only")
        with self.db.write() as tx:
            domain_id = names.domain_id(tx, domain)
            if tx.one("SELECT 1 FROM workspaces WHERE domain_id = ? AND name = ?", (domain_id, name)):
                raise ChangeRefused(f"workspace {name!r} already exists in domain {domain!r}")
            owner_id = None if owner is None else names.user_id(tx, owner, domain)
            now = self._now()
            granted = tuple(f"user:{u}" for u in users) + tuple(f"group:{g}" for g in groups)
            info = WorkspaceInfo(new_id(), name, kind.value, domain_id, owner, tuple(sorted(granted)), now)
            tx.run(
                "INSERT INTO workspaces VALUES (?, ?, ?, ?, ?, ?)",
                (info.id, domain_id, name, kind.value, owner_id, now),
            )
            grants = [("user", names.user_id(tx, u, domain)) for u in users]
            grants += [("group", names.group_id(tx, g, domain)) for g in groups]
            tx.run_many("INSERT INTO workspace_grants VALUES (?, ?, ?)", [(info.id, k, i) for k, i in grants])
        return info

    def find_workspace(self, name_or_id: str, *, domain: str = DEFAULT_DOMAIN) -> Workspace:
        """A workspace by id, or by name within ``domain`` (``default`` names workspace ``"0"``)."""
        with self.db.read() as tx:
            workspace = workspace_at(tx, names.workspace_id(tx, name_or_id, domain))
        assert workspace is not None
        return workspace

    def grant_workspace(
        self,
        name_or_id: str,
        *,
        domain: str = DEFAULT_DOMAIN,
        users: Iterable[str] = (),
        groups: Iterable[str] = (),
        revoke: bool = False,
    ) -> WorkspaceInfo:
        """Grant (or with ``revoke``, take back from) users and groups an INTERNAL workspace."""
        wanted = [("user", u) for u in dict.fromkeys(users)] + [("group", g) for g in dict.fromkeys(groups)]
        if not wanted:
            raise ChangeRefused("name at least one --user or --group")
        with self.db.write() as tx:
            workspace_id = _own_workspace(tx, name_or_id, domain)
            row = tx.one("SELECT auth_type FROM workspaces WHERE id = ?", (workspace_id,))
            if not revoke and row is not None and row[0] != AuthType.INTERNAL.value:
                raise ChangeRefused("grants apply to INTERNAL workspaces only")
            for kind, target in wanted:
                resolve = names.user_id if kind == "user" else names.group_id
                key = (workspace_id, kind, resolve(tx, target, domain))
                granted = tx.one(
                    "SELECT 1 FROM workspace_grants WHERE workspace_id = ? AND principal_type = ? AND principal_id = ?",
                    key,
                )
                if revoke and not granted:
                    raise NotFound(f"{kind} {target!r} has no grant on workspace {name_or_id!r}")
                if not revoke and granted:
                    raise ChangeRefused(f"{kind} {target!r} already has a grant on workspace {name_or_id!r}")
                tx.run(
                    "DELETE FROM workspace_grants WHERE workspace_id = ? AND principal_type = ? AND principal_id = ?"
                    if revoke
                    else "INSERT INTO workspace_grants VALUES (?, ?, ?)",
                    key,
                )
            return workspace_info(tx, workspace_id)

    def update_workspace(
        self,
        name_or_id: str,
        *,
        domain: str = DEFAULT_DOMAIN,
        auth_type: str | None = None,
        owner: str | None = None,
        clear_owner: bool = False,
        name: str | None = None,
        users: Iterable[str] | None = None,
    ) -> WorkspaceInfo:
        """Change a workspace's access type, owner, name and/or granted users (``users`` replaces the user grants;
        group grants stay), in one change. A workspace left not INTERNAL with grants is refused (they would
        silently come back with INTERNAL): revoke them first."""
        if owner is not None and clear_owner:
            raise ChangeRefused("--owner and --no-owner exclude each other")
        kind = None
        if auth_type is not None:
            try:
                kind = AuthType(auth_type.upper())
            except ValueError:
                raise ChangeRefused("--auth-type must be PUBLIC, PRIVATE or INTERNAL") from None
        if name is not None:
            check_workspace_name(name)
        with self.db.write() as tx:
            workspace_id = _own_workspace(tx, name_or_id, domain)
            row = tx.one("SELECT auth_type, name, domain_id FROM workspaces WHERE id = ?", (workspace_id,))
            assert row is not None
            if name is not None and name != row[1]:
                if tx.one("SELECT 1 FROM workspaces WHERE domain_id = ? AND name = ?", (row[2], name)):
                    raise ChangeRefused(f"workspace {name!r} already exists in domain {domain!r}")
                tx.run("UPDATE workspaces SET name = ? WHERE id = ?", (name, workspace_id))
            if users is not None:
                wanted = {names.user_id(tx, u, domain) for u in dict.fromkeys(users)}
                tx.run(
                    "DELETE FROM workspace_grants WHERE workspace_id = ? AND principal_type = 'user'", (workspace_id,)
                )
                tx.run_many(
                    "INSERT INTO workspace_grants VALUES (?, 'user', ?)", [(workspace_id, u) for u in sorted(wanted)]
                )
            if kind is not None:
                tx.run("UPDATE workspaces SET auth_type = ? WHERE id = ?", (kind.value, workspace_id))
            final = kind.value if kind is not None else row[0]
            grants = tx.one("SELECT COUNT(*) FROM workspace_grants WHERE workspace_id = ?", (workspace_id,))
            if final != AuthType.INTERNAL.value and grants and int(grants[0]):
                if row[0] == AuthType.INTERNAL.value:
                    raise ChangeRefused(
                        f"workspace {name_or_id!r} has {int(grants[0])} grant(s): revoke them before leaving INTERNAL"
                    )
                raise ChangeRefused("grants apply to INTERNAL workspaces only")
            if owner is not None or clear_owner:
                owner_id = None if owner is None else names.user_id(tx, owner, domain)
                tx.run("UPDATE workspaces SET owner_id = ? WHERE id = ?", (owner_id, workspace_id))
            return workspace_info(tx, workspace_id)

    def delete_workspace(self, name_or_id: str, *, domain: str = DEFAULT_DOMAIN) -> WorkspaceInfo:
        """Delete a workspace with its grants and whitelist (the default workspace ``"0"`` stays)."""
        with self.db.write() as tx:
            workspace_id = _own_workspace(tx, name_or_id, domain)
            info = workspace_info(tx, workspace_id)
            tx.run("DELETE FROM workspace_grants WHERE workspace_id = ?", (workspace_id,))
            tx.run("DELETE FROM whitelists WHERE scope = 'workspace' AND scope_id = ?", (workspace_id,))
            tx.run("DELETE FROM workspaces WHERE id = ?", (workspace_id,))
        return info

    # -- key pairs and whitelists -------------------------------------------------------------------------

    def create_keypair(
        self,
        name: str,
        *,
        user: str,
        domain: str = DEFAULT_DOMAIN,
        key_type: str = "ed25519",
        expires_at: int | None = None,
    ) -> NewKeyPair:
        """Generate a key pair; only the public key is stored, the private key is returned once.

        ``expires_at`` (seconds since 1970): from then on the key no longer opens anything."""
        check_name("key pair", name)
        if key_type not in keypairs.KEY_TYPES:
            raise ChangeRefused(f"--type must be one of {', '.join(keypairs.KEY_TYPES)}")
        self._check_expiry(expires_at)
        public, private = keypairs.generate(key_type)
        pair = self._add_keypair(name, user, domain, public, key_type, expires_at=expires_at)
        return NewKeyPair(**pair.to_dict(), private_key=private)

    def import_keypair(
        self, name: str, *, user: str, public_key: str, domain: str = DEFAULT_DOMAIN, expires_at: int | None = None
    ) -> KeyPair:
        check_name("key pair", name)
        self._check_expiry(expires_at)
        try:
            line, key_type = keypairs.parse_public_key(public_key)
        except ValueError as exc:
            raise ChangeRefused(str(exc)) from None
        return self._add_keypair(name, user, domain, line, key_type, expires_at=expires_at)

    def _check_expiry(self, expires_at: int | None) -> None:
        if expires_at is not None and expires_at <= self._now():
            raise ChangeRefused("--expires: the key would be expired already")

    def _add_keypair(
        self, name: str, user: str, domain: str, public: str, key_type: str, *, expires_at: int | None
    ) -> KeyPair:
        pair = KeyPair(name, user, key_type, keypairs.fingerprint(public), public, expires_at)
        with self.db.write() as tx:
            user_id = names.user_id(tx, user, domain)
            if tx.one("SELECT 1 FROM keypairs WHERE user_id = ? AND name = ?", (user_id, name)):
                raise ChangeRefused(f"user {user!r} already has a key pair {name!r}")
            tx.run(
                "INSERT INTO keypairs (id, user_id, name, key_type, public_key, fingerprint, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (new_id(), user_id, name, key_type, public, pair.fingerprint, self._now(), expires_at),
            )
        return pair

    def keypairs(self, user: str, *, domain: str = DEFAULT_DOMAIN) -> list[KeyPair]:
        with self.db.read() as tx:
            user_id = names.user_id(tx, user, domain)
            rows = tx.rows(
                "SELECT name, key_type, fingerprint, public_key, expires_at FROM keypairs WHERE user_id = ? "
                "ORDER BY name",
                (user_id,),
            )
        return [KeyPair(r[0], user, r[1], r[2], r[3], None if r[4] is None else int(r[4])) for r in rows]

    def delete_keypair(self, name: str, *, user: str, domain: str = DEFAULT_DOMAIN) -> None:
        with self.db.write() as tx:
            user_id = names.user_id(tx, user, domain)
            if not tx.run("DELETE FROM keypairs WHERE user_id = ? AND name = ?", (user_id, name)):
                raise NotFound(f"user {user!r} has no key pair {name!r}")

    def authorized_keys(self, user: str, *, domain: str = DEFAULT_DOMAIN) -> str:
        """An ``authorized_keys`` file of the user's unexpired public keys (comment: ``authmw:<user>/<key pair>``)."""
        now = self._now()
        return "".join(
            f"{p.public_key} authmw:{user}/{p.name}\n"
            for p in self.keypairs(user, domain=domain)
            if p.expires_at is None or p.expires_at > now
        )

    def set_whitelist(
        self, scope: WhitelistScope | str, name: str, entries: Iterable[str], *, domain: str = DEFAULT_DOMAIN
    ) -> IpWhitelist:
        """Replace the whitelist of a user, workspace or route; no entries allows every address."""
        scope = WhitelistScope(scope)
        try:
            whitelist = IpWhitelist.parse(dict.fromkeys(entries))
        except ValueError as exc:
            raise ChangeRefused(str(exc)) from None
        if len(whitelist.networks) > self.whitelist_limit:
            raise ChangeRefused(f"a whitelist holds at most {self.whitelist_limit} entries")
        with self.db.write() as tx:
            scope_id = whitelist_scope_id(tx, scope, name, domain)
            tx.run("DELETE FROM whitelists WHERE scope = ? AND scope_id = ?", (scope.value, scope_id))
            if whitelist.networks:
                tx.run(
                    "INSERT INTO whitelists VALUES (?, ?, ?)",
                    (scope.value, scope_id, json.dumps(list(whitelist.entries))),
                )
        return whitelist

    # -- IAM tokens (the token endpoint) ------------------------------------------------------------------

    def revoke_token(self, token_id: str, user_id: str, expires_at: int) -> None:
        """Record a revoked token until it would have expired (and forget those past their expiry)."""
        with self.db.write() as tx:
            tx.run("DELETE FROM revoked_tokens WHERE expires_at < ?", (self._now(),))
            tx.run(
                "INSERT INTO revoked_tokens (jti, user_id, expires_at) VALUES (?, ?, ?) ON CONFLICT (jti) DO NOTHING",
                (token_id, user_id, expires_at),
            )


def _policy_text(name: str, document: str | bytes) -> str:
    """``document`` validated as the policy ``name``, as stored (JSON text)."""
    try:
        parse_policy(document, name=name)
    except InvalidPolicy as exc:
        raise ChangeRefused(f"invalid policy {name!r}: " + "; ".join(exc.problems)) from None
    if name in system_policies():
        raise ChangeRefused(f"{name!r} is the name of a system policy")
    return json.dumps(json.loads(document) if isinstance(document, str | bytes) else document)


def _own_policy(tx: Tx, name: str, domain: str) -> PolicyInfo:
    """A policy of ``domain`` that may be changed: system policies are shipped, and read-only."""
    domain_id = names.domain_id(tx, domain)
    policy_id = names.policy_id(tx, name, domain_id)
    if policy_id.startswith("system-") and name in system_policies():
        raise ChangeRefused(f"{name!r} is a system policy: it cannot be changed or deleted")
    return PolicyInfo(policy_id, name, domain_id)


def _attachment(
    tx: Tx, name: str, group: str | None, user: str | None, agency: str | None, *, domain: str
) -> tuple[tuple[str, str, str], str, str]:
    """The attachments row (policy id, principal type, principal id) naming exactly one group, user or agency."""
    targets = [(kind, value) for kind, value in (("group", group), ("user", user), ("agency", agency)) if value]
    if len(targets) != 1:
        raise ChangeRefused("name exactly one of a group, a user or an agency")
    kind, target = targets[0]
    policy_id = names.policy_id(tx, name, names.domain_id(tx, domain))
    resolve = {"group": names.group_id, "user": names.user_id, "agency": names.agency_id}[kind]
    return (policy_id, kind, resolve(tx, target, domain)), kind, target


def _own_workspace(tx: Tx, name_or_id: str, domain: str) -> str:
    """A workspace of ``domain`` that may be changed: the shared default workspace ``"0"`` may not."""
    workspace_id = names.workspace_id(tx, name_or_id, domain)
    if workspace_id == DEFAULT_WORKSPACE_ID:
        raise ChangeRefused(f"the default workspace {DEFAULT_WORKSPACE_ID!r} cannot be changed or deleted")
    return workspace_id


def ensure_system_policies(tx: Tx, now: int) -> None:
    """The shipped system policies, under their fixed ids (attachments refer to them in every store)."""
    for name, document in system_policy_documents().items():
        if tx.one("SELECT 1 FROM policies WHERE id = ?", (system_policy_id(name),)) is None:
            tx.run(
                "INSERT INTO policies VALUES (?, NULL, ?, ?, ?)",
                (system_policy_id(name), name, json.dumps(document), now),
            )


def system_policy_id(name: str) -> str:
    return "system-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
