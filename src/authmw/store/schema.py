"""Versioned schema migrations, written in the SQL subset SQLite and PostgreSQL share, and the verbs applying them.

Each migration runs in the transaction that records its version, so a failed migration leaves the previous
schema intact. Never edit a released migration: append a new one.
"""

from __future__ import annotations

from authmw.errors import ChangeRefused
from authmw.store.base import StoreBase
from authmw.store.database import Tx, table_exists

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Schema"]

_V1 = [
    "CREATE TABLE authmw_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    "CREATE TABLE domains (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at BIGINT NOT NULL)",
    """CREATE TABLE projects (
        id TEXT PRIMARY KEY, domain_id TEXT NOT NULL REFERENCES domains(id), name TEXT NOT NULL,
        region TEXT NOT NULL, created_at BIGINT NOT NULL, UNIQUE (domain_id, name))""",
    """CREATE TABLE users (
        id TEXT PRIMARY KEY, domain_id TEXT NOT NULL REFERENCES domains(id), name TEXT NOT NULL,
        enabled INTEGER NOT NULL, password_hash TEXT, password_changed_at BIGINT,
        created_at BIGINT NOT NULL, UNIQUE (domain_id, name))""",
    """CREATE TABLE groups_ (
        id TEXT PRIMARY KEY, domain_id TEXT NOT NULL REFERENCES domains(id), name TEXT NOT NULL,
        created_at BIGINT NOT NULL, UNIQUE (domain_id, name))""",
    """CREATE TABLE group_members (
        group_id TEXT NOT NULL REFERENCES groups_(id), user_id TEXT NOT NULL REFERENCES users(id),
        PRIMARY KEY (group_id, user_id))""",
    "CREATE INDEX group_members_user ON group_members (user_id)",
    """CREATE TABLE access_keys (
        access_key TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id), secret_sealed TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('active', 'inactive')), created_at BIGINT NOT NULL)""",
    "CREATE INDEX access_keys_user ON access_keys (user_id)",
    """CREATE TABLE policies (
        id TEXT PRIMARY KEY, domain_id TEXT REFERENCES domains(id), name TEXT NOT NULL, document TEXT NOT NULL,
        created_at BIGINT NOT NULL, UNIQUE (domain_id, name))""",
    """CREATE TABLE attachments (
        policy_id TEXT NOT NULL REFERENCES policies(id),
        principal_type TEXT NOT NULL CHECK (principal_type IN ('group', 'user', 'agency')),
        principal_id TEXT NOT NULL, PRIMARY KEY (principal_type, principal_id, policy_id))""",
    """CREATE TABLE agencies (
        id TEXT PRIMARY KEY, domain_id TEXT NOT NULL REFERENCES domains(id), name TEXT NOT NULL,
        trust_domain TEXT NOT NULL, max_duration INTEGER NOT NULL, created_at BIGINT NOT NULL,
        UNIQUE (domain_id, name))""",
    """CREATE TABLE workspaces (
        id TEXT PRIMARY KEY, domain_id TEXT REFERENCES domains(id), name TEXT NOT NULL,
        auth_type TEXT NOT NULL CHECK (auth_type IN ('PUBLIC', 'PRIVATE', 'INTERNAL')),
        owner_id TEXT REFERENCES users(id), created_at BIGINT NOT NULL, UNIQUE (domain_id, name))""",
    """CREATE TABLE workspace_grants (
        workspace_id TEXT NOT NULL REFERENCES workspaces(id),
        principal_type TEXT NOT NULL CHECK (principal_type IN ('user', 'group')),
        principal_id TEXT NOT NULL, PRIMARY KEY (workspace_id, principal_type, principal_id))""",
    """CREATE TABLE keypairs (
        id TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id), name TEXT NOT NULL,
        key_type TEXT NOT NULL, public_key TEXT NOT NULL, fingerprint TEXT NOT NULL,
        created_at BIGINT NOT NULL, UNIQUE (user_id, name))""",
    """CREATE TABLE whitelists (
        scope TEXT NOT NULL CHECK (scope IN ('user', 'workspace', 'route')), scope_id TEXT NOT NULL,
        entries TEXT NOT NULL, PRIMARY KEY (scope, scope_id))""",
    """CREATE TABLE signing_keys (
        kid TEXT PRIMARY KEY, algorithm TEXT NOT NULL, private_sealed TEXT NOT NULL, public_key TEXT NOT NULL,
        created_at BIGINT NOT NULL, retired_at BIGINT)""",
    "INSERT INTO authmw_meta (name, value) VALUES ('revision', 0)",
    # The master key (its 32-bit id) every stored secret is sealed under; 0 until the first secret.
    "INSERT INTO authmw_meta (name, value) VALUES ('sealing_key', 0)",
]

# v2: revoked IAM tokens (kept until they would have expired anyway).
_V2 = [
    """CREATE TABLE revoked_tokens (
        jti TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id), expires_at BIGINT NOT NULL)""",
    "CREATE INDEX revoked_tokens_expiry ON revoked_tokens (expires_at)",
]

# v3: when each access key was last used (coarse: recorded at most once a minute, without a revision bump).
_V3 = ["ALTER TABLE access_keys ADD COLUMN last_used_at BIGINT"]

# v4: notebook instances (the unit of SSH remote access) and key-pair expiry. A notebook's owner, key pair and
# workspace become NULL when those are deleted: the notebook stays (to be re-pointed) but admits no key.
_V4_NOTEBOOKS = [
    """CREATE TABLE notebooks (
        id TEXT PRIMARY KEY, domain_id TEXT NOT NULL REFERENCES domains(id), name TEXT NOT NULL,
        owner_id TEXT REFERENCES users(id) ON DELETE SET NULL,
        keypair_id TEXT REFERENCES keypairs(id) ON DELETE SET NULL,
        workspace_id TEXT REFERENCES workspaces(id) ON DELETE SET NULL,
        login_user TEXT NOT NULL, whitelist TEXT NOT NULL, created_at BIGINT NOT NULL, UNIQUE (domain_id, name))""",
    "ALTER TABLE keypairs ADD COLUMN expires_at BIGINT",
]

# v5: policies granted to a group or an agency on one project (IAM's project-level grants): they apply to requests
# in that project only (the store reads them with a g:ProjectId condition on every statement).
_V5_PROJECT_GRANTS = [
    """CREATE TABLE project_attachments (
        policy_id TEXT NOT NULL REFERENCES policies(id),
        principal_type TEXT NOT NULL CHECK (principal_type IN ('group', 'agency')),
        principal_id TEXT NOT NULL, project_id TEXT NOT NULL REFERENCES projects(id),
        PRIMARY KEY (principal_type, principal_id, policy_id, project_id))""",
]

#: Migrations in order; ``MIGRATIONS[i]`` brings the schema from version ``i`` to ``i + 1``.
MIGRATIONS: list[list[str]] = [_V1, _V2, _V3, _V4_NOTEBOOKS, _V5_PROJECT_GRANTS]
SCHEMA_VERSION = len(MIGRATIONS)


class Schema(StoreBase):
    """Reading and migrating the store's schema version."""

    def schema_version(self) -> int:
        """The applied schema version (0 for an empty database)."""
        with self.db.read() as tx:
            return self._version(tx)

    def _version(self, tx: Tx) -> int:
        if not table_exists(tx, self.db.dialect, "authmw_meta"):
            return 0
        row = tx.one("SELECT value FROM authmw_meta WHERE name = 'schema_version'")
        return int(row[0]) if row else 1

    def migrate(self) -> tuple[int, int]:
        """Apply pending migrations, each in its own transaction; returns (from, to) versions."""
        start = self.schema_version()
        if start > SCHEMA_VERSION:
            raise ChangeRefused(f"store schema {start} is newer than this authmw ({SCHEMA_VERSION}): upgrade authmw")
        for version in range(start, SCHEMA_VERSION):
            with self.db.write() as tx:
                if self._version(tx) != version:  # another process migrated meanwhile
                    continue
                for statement in MIGRATIONS[version]:
                    tx.run(statement)
                tx.run("DELETE FROM authmw_meta WHERE name = 'schema_version'")
                tx.run("INSERT INTO authmw_meta (name, value) VALUES ('schema_version', ?)", (version + 1,))
        return start, SCHEMA_VERSION

    def require_schema(self) -> None:
        version = self.schema_version()
        if version != SCHEMA_VERSION:
            raise ChangeRefused(
                f"store schema is at version {version}, this authmw needs {SCHEMA_VERSION}: run `authmw migrate`"
                if version
                else "store is not initialised: run `authmw init`"
            )
