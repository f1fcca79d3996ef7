"""The identity store: every administrative change as one transaction, and the reads the pipeline needs.

Names given to the verbs are resolved inside a domain (``default`` unless said otherwise). Every change runs in
one write transaction that first bumps the store revision, so either all of it is applied or none, writers
never interleave, and caches in every process sharing the database see that something changed.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from authmw.errors import ChangeRefused, ConfigurationError, InvalidPolicy, NotFound, StoreUnavailable
from authmw.identity import (
    ADMIN_GROUP,
    DEFAULT_WORKSPACE_ID,
    WORKSPACE_ID,
    AuthType,
    IpWhitelist,
    Principal,
    WhitelistScope,
    Workspace,
)
from authmw.models import AccessKey
from authmw.policy import Policy, PolicySet, parse_policy, system_policies
from authmw.policy.builtin import system_policy_documents
from authmw.store import keypairs, signingkeys
from authmw.store.database import Database, Tx, table_exists
from authmw.store.records import (
    AccessKeyInfo,
    Agency,
    Domain,
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
    MAX_SESSION,
    MIN_SESSION,
    POLICY_NAME,
    ROUTE,
    SECRET,
    SECRET_ALPHABET,
    check,
    check_name,
    check_password,
    check_workspace_name,
)
from authmw.store.schema import MIGRATIONS, SCHEMA_VERSION
from authmw.store.secrets import Keyring, SealError, hash_password, verify_password
from authmw.tokens import PrivateKey, PublicKey

__all__ = [
    "DEFAULT_DOMAIN",
    "Store",
    "access_key_context",
    "ensure_system_policies",
    "signing_key_context",
    "system_policy_id",
]

DEFAULT_DOMAIN = "default"
Compiler = Callable[[tuple[tuple[str, str, str], ...]], PolicySet]


def _new_id() -> str:
    return uuid.uuid4().hex


def _compile(policies: tuple[tuple[str, str, str], ...]) -> PolicySet:
    return PolicySet(parse_policy(document, name=name, wildcard_limits=False) for _id, name, document in policies)


class Store:
    """An identity store on a :class:`~authmw.store.database.Database`, secrets sealed under ``keyring``.

    ``whitelist_limit`` caps the entries of one IP whitelist (5, as ModelArts allows for a notebook).
    """

    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        *,
        whitelist_limit: int = 5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.keyring = keyring
        self.whitelist_limit = whitelist_limit
        self._clock = clock

    def __repr__(self) -> str:
        return f"Store({self.db.dialect}, keyring={self.keyring.sealing_key_id})"

    def close(self) -> None:
        self.db.close()

    def _now(self) -> int:
        return int(self._clock())

    # -- schema -------------------------------------------------------------------------------------------

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

    def initialize(self) -> dict[str, Any]:
        """Migrate, then create what a store starts with if absent: the ``default`` domain, the default
        workspace ``"0"``, the system policies and a token signing key. Idempotent."""
        start, end = self.migrate()
        now = self._now()
        with self.db.write() as tx:
            if tx.one("SELECT 1 FROM domains WHERE name = ?", (DEFAULT_DOMAIN,)) is None:
                tx.run("INSERT INTO domains VALUES (?, ?, ?)", (_new_id(), DEFAULT_DOMAIN, now))
            if tx.one("SELECT 1 FROM workspaces WHERE id = ?", (DEFAULT_WORKSPACE_ID,)) is None:
                tx.run(
                    "INSERT INTO workspaces VALUES (?, NULL, 'default', 'PUBLIC', NULL, ?)",
                    (DEFAULT_WORKSPACE_ID, now),
                )
            ensure_system_policies(tx, now)
            if tx.one("SELECT 1 FROM signing_keys WHERE retired_at IS NULL AND algorithm = 'EdDSA'") is None:
                self._add_signing_key(tx, now)
            if tx.one(_ACTIVE_SEALING_KEY) is None:
                self._add_sealing_key(tx, now)
        self.check_keyring()
        return {"schema_from": start, "schema_to": end, "domain": DEFAULT_DOMAIN, "workspace": DEFAULT_WORKSPACE_ID}

    def _add_signing_key(self, tx: Tx, now: int, algorithm: str = "EdDSA") -> str:
        raw, public = signingkeys.generate(algorithm)
        kid = secrets.token_hex(8)
        tx.run(
            "INSERT INTO signing_keys VALUES (?, ?, ?, ?, ?, NULL)",
            (kid, algorithm, self.sealer(tx)(raw, signing_key_context(kid)), public, now),
        )
        return kid

    def _add_sealing_key(self, tx: Tx, now: int) -> str:
        kid = secrets.token_hex(8)
        tx.run(
            "INSERT INTO signing_keys VALUES (?, 'A256GCM', ?, '', ?, NULL)",
            (kid, self.sealer(tx)(secrets.token_bytes(32), signing_key_context(kid)), now),
        )
        return kid

    def sealer(self, tx: Tx) -> Callable[[bytes, str], str]:
        """Seal under the master key the store records (read in the write transaction ``tx``, so a rotation
        committed by another process is followed, never undone); the first secret records the ring's key."""
        row = tx.one("SELECT value FROM authmw_meta WHERE name = 'sealing_key'")
        recorded = int(row[0]) if row else 0
        if not recorded:
            key_id = self.keyring.sealing_key_id
            tx.run("UPDATE authmw_meta SET value = ? WHERE name = 'sealing_key'", (int(key_id, 16),))
        else:
            key_id = f"{recorded:08x}"
            if not self.keyring.knows(key_id):
                raise ChangeRefused(_foreign_key(key_id))
        return lambda plaintext, context: self.keyring.seal(plaintext, context, key_id=key_id)

    def check_keyring(self) -> None:
        """Refuse a master key ring that cannot open what the store holds (a wrong or missing key)."""
        with self.db.read() as tx:
            if not table_exists(tx, self.db.dialect, "authmw_meta"):
                return
            row = tx.one("SELECT value FROM authmw_meta WHERE name = 'sealing_key'")
        if row and int(row[0]) and not self.keyring.knows(f"{int(row[0]):08x}"):
            raise ConfigurationError(_foreign_key(f"{int(row[0]):08x}"))

    def revision(self) -> int:
        """A counter every change increments (what caches poll)."""
        row = self.db.query(_REVISION)
        return int(row[0]) if row else 0

    # -- name resolution ----------------------------------------------------------------------------------

    def _domain_id(self, tx: Tx, domain: str) -> str:
        row = tx.one("SELECT id FROM domains WHERE name = ?", (domain,))
        if row is None:
            raise NotFound(f"no domain {domain!r}")
        return str(row[0])

    def _named_id(self, tx: Tx, table: str, kind: str, name: str, domain: str) -> str:
        row = tx.one(
            f"SELECT t.id FROM {table} t JOIN domains d ON d.id = t.domain_id "  # noqa: S608 - fixed table names
            "WHERE t.name = ? AND d.name = ?",
            (name, domain),
        )
        if row is None:
            raise NotFound(f"no {kind} {name!r} in domain {domain!r}")
        return str(row[0])

    def _user_id(self, tx: Tx, name: str, domain: str) -> str:
        return self._named_id(tx, "users", "user", name, domain)

    def _group_id(self, tx: Tx, name: str, domain: str) -> str:
        return self._named_id(tx, "groups_", "group", name, domain)

    def _agency_id(self, tx: Tx, name: str, domain: str) -> str:
        return self._named_id(tx, "agencies", "agency", name, domain)

    def _policy_id(self, tx: Tx, name: str, domain_id: str) -> str:
        row = tx.one(
            # Domain policies cannot take a system policy's name, so at most one row matches.
            "SELECT id FROM policies WHERE name = ? AND (domain_id = ? OR domain_id IS NULL)",
            (name, domain_id),
        )
        if row is None:
            raise NotFound(f"no policy {name!r} in this domain or among the system policies")
        return str(row[0])

    # -- domains, projects, users, groups -----------------------------------------------------------------

    def create_domain(self, name: str) -> Domain:
        check_name("domain", name)
        with self.db.write() as tx:
            if tx.one("SELECT 1 FROM domains WHERE name = ?", (name,)):
                raise ChangeRefused(f"domain {name!r} already exists")
            domain = Domain(_new_id(), name)
            tx.run("INSERT INTO domains VALUES (?, ?, ?)", (domain.id, name, self._now()))
        return domain

    def list_domains(self) -> list[Domain]:
        with self.db.read() as tx:
            return [Domain(r[0], r[1]) for r in tx.rows("SELECT id, name FROM domains ORDER BY name")]

    def create_project(self, name: str, *, domain: str = DEFAULT_DOMAIN, region: str | None = None) -> Project:
        check_name("project", name)
        region = check_name("region", region or name.partition("_")[0])
        with self.db.write() as tx:
            domain_id = self._domain_id(tx, domain)
            if tx.one("SELECT 1 FROM projects WHERE domain_id = ? AND name = ?", (domain_id, name)):
                raise ChangeRefused(f"project {name!r} already exists in domain {domain!r}")
            project = Project(_new_id(), name, domain_id, region)
            tx.run("INSERT INTO projects VALUES (?, ?, ?, ?, ?)", (project.id, domain_id, name, region, self._now()))
        return project

    def find_project(self, name_or_id: str, *, domain: str = DEFAULT_DOMAIN) -> Project:
        """A project of ``domain`` by id or by name."""
        with self.db.read() as tx:
            row = tx.one(
                "SELECT p.id, p.name, p.domain_id, p.region FROM projects p JOIN domains d ON d.id = p.domain_id "
                "WHERE (p.id = ? OR p.name = ?) AND d.name = ? ORDER BY p.id = ? DESC LIMIT 1",
                (name_or_id, name_or_id, domain, name_or_id),
            )
        if row is None:
            raise NotFound(f"no project {name_or_id!r} in domain {domain!r}")
        return Project(row[0], row[1], row[2], row[3])

    def create_user(self, name: str, *, domain: str = DEFAULT_DOMAIN, password: str | None = None) -> User:
        check_name("user", name)
        hashed = None if password is None else hash_password(check_password(password))
        with self.db.write() as tx:
            domain_id = self._domain_id(tx, domain)
            if tx.one("SELECT 1 FROM users WHERE domain_id = ? AND name = ?", (domain_id, name)):
                raise ChangeRefused(f"user {name!r} already exists in domain {domain!r}")
            user = User(_new_id(), name, domain_id, True)
            now = self._now()
            tx.run(
                "INSERT INTO users VALUES (?, ?, ?, 1, ?, ?, ?)",
                (user.id, domain_id, name, hashed, None if hashed is None else now, now),
            )
        return user

    def set_user_enabled(self, name: str, enabled: bool, *, domain: str = DEFAULT_DOMAIN) -> User:
        with self.db.write() as tx:
            user_id = self._user_id(tx, name, domain)
            tx.run("UPDATE users SET enabled = ? WHERE id = ?", (int(enabled), user_id))
            domain_id = self._domain_id(tx, domain)
        return User(user_id, name, domain_id, enabled)

    def set_password(self, name: str, password: str, *, domain: str = DEFAULT_DOMAIN) -> None:
        hashed = hash_password(check_password(password))
        with self.db.write() as tx:
            user_id = self._user_id(tx, name, domain)
            tx.run(
                "UPDATE users SET password_hash = ?, password_changed_at = ? WHERE id = ?",
                (hashed, self._now(), user_id),
            )

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
                self._domain_id(tx, domain)
                rows = tx.rows(sql + " WHERE d.name = ? ORDER BY u.name", (domain,))
        return [User(r[0], r[1], r[2], bool(r[3])) for r in rows]

    def create_group(self, name: str, *, domain: str = DEFAULT_DOMAIN) -> Group:
        check_name("group", name)
        with self.db.write() as tx:
            domain_id = self._domain_id(tx, domain)
            if tx.one("SELECT 1 FROM groups_ WHERE domain_id = ? AND name = ?", (domain_id, name)):
                raise ChangeRefused(f"group {name!r} already exists in domain {domain!r}")
            group = Group(_new_id(), name, domain_id)
            tx.run("INSERT INTO groups_ VALUES (?, ?, ?, ?)", (group.id, domain_id, name, self._now()))
        return group

    def add_user_to_group(self, group: str, user: str, *, domain: str = DEFAULT_DOMAIN) -> None:
        with self.db.write() as tx:
            group_id = self._group_id(tx, group, domain)
            user_id = self._user_id(tx, user, domain)
            if tx.one("SELECT 1 FROM group_members WHERE group_id = ? AND user_id = ?", (group_id, user_id)):
                raise ChangeRefused(f"user {user!r} is already in group {group!r}")
            tx.run("INSERT INTO group_members VALUES (?, ?)", (group_id, user_id))

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
            user_id = self._user_id(tx, user, domain)
            sealed = self.sealer(tx)(secret_key.encode(), access_key_context(access_key, user_id))
            count = tx.one("SELECT COUNT(*) FROM access_keys WHERE user_id = ?", (user_id,))
            if count and int(count[0]) >= MAX_KEYS_PER_USER:
                raise ChangeRefused(f"user {user!r} already has {MAX_KEYS_PER_USER} access keys: delete one first")
            if tx.one("SELECT 1 FROM access_keys WHERE access_key = ?", (access_key,)):
                raise ChangeRefused("that access key already exists")
            tx.run("INSERT INTO access_keys VALUES (?, ?, ?, 'active', ?)", (access_key, user_id, sealed, self._now()))
        return NewAccessKey(access_key, secret_key, user, "active")

    def set_access_key_status(self, access_key: str, active: bool) -> AccessKeyInfo:
        status = "active" if active else "inactive"
        with self.db.write() as tx:
            row = tx.one(
                "SELECT u.name FROM access_keys k JOIN users u ON u.id = k.user_id WHERE k.access_key = ?",
                (access_key,),
            )
            if row is None:
                raise NotFound(f"no access key {access_key!r}")
            tx.run("UPDATE access_keys SET status = ? WHERE access_key = ?", (status, access_key))
        return AccessKeyInfo(access_key, row[0], status)

    def delete_access_key(self, access_key: str) -> None:
        with self.db.write() as tx:
            if not tx.run("DELETE FROM access_keys WHERE access_key = ?", (access_key,)):
                raise NotFound(f"no access key {access_key!r}")

    def list_access_keys(self, user: str, *, domain: str = DEFAULT_DOMAIN) -> list[AccessKeyInfo]:
        with self.db.read() as tx:
            user_id = self._user_id(tx, user, domain)
            rows = tx.rows(
                "SELECT access_key, status FROM access_keys WHERE user_id = ? ORDER BY created_at, access_key",
                (user_id,),
            )
        return [AccessKeyInfo(r[0], user, r[1]) for r in rows]

    # -- policies and agencies ----------------------------------------------------------------------------

    def create_policy(self, name: str, document: str | bytes, *, domain: str = DEFAULT_DOMAIN) -> PolicyInfo:
        """Validate ``document`` and store it as the domain's policy ``name``."""
        check(POLICY_NAME, "policy name", name, "1-64 of letters, digits, spaces, _ . @ -")
        try:
            policy = parse_policy(document, name=name)
        except InvalidPolicy as exc:
            raise ChangeRefused(f"invalid policy {name!r}: " + "; ".join(exc.problems)) from None
        if name in system_policies():
            raise ChangeRefused(f"{name!r} is the name of a system policy")
        del policy
        text = json.dumps(json.loads(document) if isinstance(document, str | bytes) else document)
        with self.db.write() as tx:
            domain_id = self._domain_id(tx, domain)
            if tx.one("SELECT 1 FROM policies WHERE domain_id = ? AND name = ?", (domain_id, name)):
                raise ChangeRefused(f"policy {name!r} already exists in domain {domain!r}")
            info = PolicyInfo(_new_id(), name, domain_id)
            tx.run("INSERT INTO policies VALUES (?, ?, ?, ?, ?)", (info.id, domain_id, name, text, self._now()))
        return info

    def attach_policy(
        self,
        name: str,
        *,
        group: str | None = None,
        user: str | None = None,
        agency: str | None = None,
        domain: str = DEFAULT_DOMAIN,
    ) -> None:
        """Attach the domain's (or a system) policy to exactly one group, user or agency."""
        targets = [(kind, value) for kind, value in (("group", group), ("user", user), ("agency", agency)) if value]
        if len(targets) != 1:
            raise ChangeRefused("attach a policy to exactly one of a group, a user or an agency")
        kind, target = targets[0]
        with self.db.write() as tx:
            domain_id = self._domain_id(tx, domain)
            policy_id = self._policy_id(tx, name, domain_id)
            resolve = {"group": self._group_id, "user": self._user_id, "agency": self._agency_id}[kind]
            principal_id = resolve(tx, target, domain)
            key = (policy_id, kind, principal_id)
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
        max_duration: int = MAX_SESSION,
    ) -> Agency:
        """An agency of ``domain`` that the domain ``trust`` (e.g. ``op_svc_modelarts``) may assume."""
        check_name("agency", name)
        check_name("trusted domain", trust)
        if not MIN_SESSION <= max_duration <= MAX_SESSION:
            raise ChangeRefused(f"--max-duration must be {MIN_SESSION}-{MAX_SESSION} seconds")
        names = tuple(dict.fromkeys(policies))
        with self.db.write() as tx:
            domain_id = self._domain_id(tx, domain)
            if tx.one("SELECT 1 FROM agencies WHERE domain_id = ? AND name = ?", (domain_id, name)):
                raise ChangeRefused(f"agency {name!r} already exists in domain {domain!r}")
            agency = Agency(_new_id(), name, domain_id, trust, max_duration, names)
            tx.run(
                "INSERT INTO agencies VALUES (?, ?, ?, ?, ?, ?)",
                (agency.id, domain_id, name, trust, max_duration, self._now()),
            )
            for policy in names:
                tx.run(
                    "INSERT INTO attachments VALUES (?, 'agency', ?)",
                    (self._policy_id(tx, policy, domain_id), agency.id),
                )
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
            domain_id = self._domain_id(tx, domain)
            if tx.one("SELECT 1 FROM workspaces WHERE domain_id = ? AND name = ?", (domain_id, name)):
                raise ChangeRefused(f"workspace {name!r} already exists in domain {domain!r}")
            owner_id = None if owner is None else self._user_id(tx, owner, domain)
            info = WorkspaceInfo(_new_id(), name, kind.value, domain_id, owner, users + groups)
            tx.run(
                "INSERT INTO workspaces VALUES (?, ?, ?, ?, ?, ?)",
                (info.id, domain_id, name, kind.value, owner_id, self._now()),
            )
            grants = [("user", self._user_id(tx, u, domain)) for u in users]
            grants += [("group", self._group_id(tx, g, domain)) for g in groups]
            tx.run_many("INSERT INTO workspace_grants VALUES (?, ?, ?)", [(info.id, k, i) for k, i in grants])
        return info

    def find_workspace(self, name_or_id: str, *, domain: str = DEFAULT_DOMAIN) -> Workspace:
        """A workspace by id, or by name within ``domain`` (``default`` names workspace ``"0"``)."""
        with self.db.read() as tx:
            workspace = self._workspace(tx, self._workspace_id(tx, name_or_id, domain))
        assert workspace is not None
        return workspace

    # -- key pairs and whitelists -------------------------------------------------------------------------

    def create_keypair(
        self, name: str, *, user: str, domain: str = DEFAULT_DOMAIN, key_type: str = "ed25519"
    ) -> NewKeyPair:
        """Generate a key pair; only the public key is stored, the private key is returned once."""
        check_name("key pair", name)
        if key_type not in keypairs.KEY_TYPES:
            raise ChangeRefused(f"--type must be one of {', '.join(keypairs.KEY_TYPES)}")
        public, private = keypairs.generate(key_type)
        pair = self._add_keypair(name, user, domain, public, key_type)
        return NewKeyPair(**pair.to_dict(), private_key=private)

    def import_keypair(self, name: str, *, user: str, public_key: str, domain: str = DEFAULT_DOMAIN) -> KeyPair:
        check_name("key pair", name)
        try:
            line, key_type = keypairs.parse_public_key(public_key)
        except ValueError as exc:
            raise ChangeRefused(str(exc)) from None
        return self._add_keypair(name, user, domain, line, key_type)

    def _add_keypair(self, name: str, user: str, domain: str, public: str, key_type: str) -> KeyPair:
        pair = KeyPair(name, user, key_type, keypairs.fingerprint(public), public)
        with self.db.write() as tx:
            user_id = self._user_id(tx, user, domain)
            if tx.one("SELECT 1 FROM keypairs WHERE user_id = ? AND name = ?", (user_id, name)):
                raise ChangeRefused(f"user {user!r} already has a key pair {name!r}")
            tx.run(
                "INSERT INTO keypairs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (_new_id(), user_id, name, key_type, public, pair.fingerprint, self._now()),
            )
        return pair

    def keypairs(self, user: str, *, domain: str = DEFAULT_DOMAIN) -> list[KeyPair]:
        with self.db.read() as tx:
            user_id = self._user_id(tx, user, domain)
            rows = tx.rows(
                "SELECT name, key_type, fingerprint, public_key FROM keypairs WHERE user_id = ? ORDER BY name",
                (user_id,),
            )
        return [KeyPair(r[0], user, r[1], r[2], r[3]) for r in rows]

    def authorized_keys(self, user: str, *, domain: str = DEFAULT_DOMAIN) -> str:
        """An ``authorized_keys`` file of the user's public keys (comment: ``authmw:<user>/<key pair>``)."""
        return "".join(f"{p.public_key} authmw:{user}/{p.name}\n" for p in self.keypairs(user, domain=domain))

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
            if scope is WhitelistScope.USER:
                scope_id = self._user_id(tx, name, domain)
            elif scope is WhitelistScope.WORKSPACE:
                scope_id = self._workspace_id(tx, name, domain)
            else:
                scope_id = check(ROUTE, "route", name, "an action or 'METHOD /path/template'")
            tx.run("DELETE FROM whitelists WHERE scope = ? AND scope_id = ?", (scope.value, scope_id))
            if whitelist.networks:
                tx.run(
                    "INSERT INTO whitelists VALUES (?, ?, ?)",
                    (scope.value, scope_id, json.dumps(list(whitelist.entries))),
                )
        return whitelist

    def _workspace_id(self, tx: Tx, name_or_id: str, domain: str) -> str:
        """A workspace of ``domain`` (or the shared default one) by id or by name; names never look like ids."""
        column = "id" if WORKSPACE_ID.fullmatch(name_or_id) else "name"
        row = tx.one(
            f"SELECT w.id FROM workspaces w LEFT JOIN domains d ON d.id = w.domain_id "  # noqa: S608 - fixed column
            f"WHERE w.{column} = ? AND (d.name = ? OR w.domain_id IS NULL)",
            (name_or_id, domain),
        )
        if row is None:
            raise NotFound(f"no workspace {name_or_id!r} in domain {domain!r}")
        return str(row[0])

    # -- hot-path reads (uncached; see CachedIdentity) ----------------------------------------------------

    def get_access_key(self, access_key: str) -> AccessKey | None:
        """The active key of an enabled user, with its secret; None otherwise (unknown ≡ disabled)."""
        return self.read_access_key(access_key)[1]

    def read_access_key(self, access_key: str) -> tuple[int, AccessKey | None]:
        """The key (as :meth:`get_access_key`) and the revision it was read at: one statement, one round trip."""
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

    def principal(self, user_id: str) -> Principal | None:
        return self.read_principal(user_id)[1]

    def read_principal(self, user_id: str, compile_: Compiler = _compile) -> tuple[int, Principal | None]:
        """An enabled user with the policies of the user and its groups (None if unknown or disabled)."""
        with self.db.read() as tx:
            revision = _revision(tx)
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
            policies = _attached(tx, [("user", user_id)] + [("group", g[0]) for g in groups])
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

    def user_id(self, domain: str, name: str) -> str | None:
        return self.read_user_id(domain, name)[1]

    def read_user_id(self, domain: str, name: str) -> tuple[int, str | None]:
        """The id of the user ``name`` of the domain named ``domain`` (how an external token names a user)."""
        with self.db.read() as tx:
            row = tx.one(
                "SELECT u.id FROM users u JOIN domains d ON d.id = u.domain_id WHERE u.name = ? AND d.name = ?",
                (name, domain),
            )
            return _revision(tx), None if row is None else str(row[0])

    def agency(self, agency_id: str) -> Principal | None:
        return self.read_agency(agency_id)[1]

    def read_agency(self, agency_id: str, compile_: Compiler = _compile) -> tuple[int, Principal | None]:
        """An agency as the principal its sessions act as: its domain and exactly its own policies."""
        with self.db.read() as tx:
            revision = _revision(tx)
            row = tx.one(
                "SELECT a.name, a.domain_id, d.name FROM agencies a JOIN domains d ON d.id = a.domain_id "
                "WHERE a.id = ?",
                (agency_id,),
            )
            if row is None:
                return revision, None
            policies = _attached(tx, [("agency", agency_id)])
        return revision, Principal(agency_id, row[0], row[1], row[2], frozenset(), compile_(policies))

    def agency_policies(self, name: str, *, domain: str) -> list[Policy]:
        """The policies attached to an agency (temporary credentials act with exactly these)."""
        with self.db.read() as tx:
            agency_id = self._agency_id(tx, name, domain)
            rows = _attached(tx, [("agency", agency_id)])
        return [parse_policy(document, name=policy, wildcard_limits=False) for _id, policy, document in rows]

    def project(self, project_id: str) -> Project | None:
        return self.read_project(project_id)[1]

    def read_project(self, project_id: str) -> tuple[int, Project | None]:
        with self.db.read() as tx:
            revision = _revision(tx)
            row = tx.one("SELECT name, domain_id, region FROM projects WHERE id = ?", (project_id,))
        return revision, None if row is None else Project(project_id, row[0], row[1], row[2])

    def signing_key(self) -> tuple[str, ed25519.Ed25519PrivateKey]:
        """The newest active EdDSA signing key (``kid``, private key), unsealed; it signs sidecar assertions, and
        tokens unless ``token_algorithm`` picks another algorithm."""
        kid, key = self.token_signing_key("EdDSA")
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        return kid, key

    def token_signing_key(self, algorithm: str) -> tuple[str, PrivateKey]:
        """The newest active signing key of ``algorithm`` (EdDSA, ES256 or RS256), unsealed."""
        with self.db.read() as tx:
            row = tx.one(
                "SELECT kid, private_sealed FROM signing_keys WHERE retired_at IS NULL AND algorithm = ? "
                "ORDER BY created_at DESC, kid LIMIT 1",
                (algorithm,),
            )
        if row is None:
            hint = "authmw init" if algorithm == "EdDSA" else f"authmw signing-key rotate --algorithm {algorithm}"
            raise ChangeRefused(f"the store has no active {algorithm} signing key: run {hint}")
        raw = self._open(row[1], signing_key_context(row[0]))
        return str(row[0]), signingkeys.private_key(algorithm, raw)

    def revoke_token(self, token_id: str, user_id: str, expires_at: int) -> None:
        """Record a revoked token until it would have expired (and forget those past their expiry)."""
        with self.db.write() as tx:
            tx.run("DELETE FROM revoked_tokens WHERE expires_at < ?", (self._now(),))
            tx.run(
                "INSERT INTO revoked_tokens (jti, user_id, expires_at) VALUES (?, ?, ?) ON CONFLICT (jti) DO NOTHING",
                (token_id, user_id, expires_at),
            )

    def token_revoked(self, token_id: str) -> bool:
        return self.read_token_revoked(token_id)[1]

    def read_token_revoked(self, token_id: str) -> tuple[int, bool]:
        with self.db.read() as tx:
            return _revision(tx), tx.one("SELECT 1 FROM revoked_tokens WHERE jti = ?", (token_id,)) is not None

    def public_token_keys(self, algorithms: Iterable[str] = signingkeys.TOKEN_ALGORITHMS) -> dict[str, PublicKey]:
        """``kid`` → public key of every signing key of ``algorithms`` that may still have valid tokens: the active
        ones, and those retired less than the longest token life ago (what ``/.well-known/jwks.json`` lists)."""
        since = self._now() - RETIRED_KEYS_KEPT
        wanted = [a for a in signingkeys.TOKEN_ALGORITHMS if a in set(algorithms)]
        with self.db.read() as tx:
            rows = tx.rows(
                "SELECT kid, algorithm, public_key FROM signing_keys WHERE (retired_at IS NULL OR retired_at > ?) "
                "ORDER BY created_at, kid",
                (since,),
            )
        return {str(kid): signingkeys.public_key(alg, public) for kid, alg, public in rows if alg in wanted}

    def rotate_signing_key(self, algorithm: str = "EdDSA") -> tuple[str, list[str]]:
        """A new signing key of ``algorithm``; its active one is retired (its tokens stay valid until they expire).
        Returns the new ``kid`` and those retired."""
        if algorithm not in signingkeys.TOKEN_ALGORITHMS:
            raise ChangeRefused(f"--algorithm must be one of {', '.join(signingkeys.TOKEN_ALGORITHMS)}")
        with self.db.write() as tx:
            now = self._now()
            retired = [
                str(r[0])
                for r in tx.rows(
                    "SELECT kid FROM signing_keys WHERE retired_at IS NULL AND algorithm = ?", (algorithm,)
                )
            ]
            tx.run(
                "UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL AND algorithm = ?", (now, algorithm)
            )
            kid = self._add_signing_key(tx, now, algorithm)
        return kid, retired

    def sealing_keys(self) -> tuple[dict[str, bytes], str]:
        """The security-token sealing keys (``kid`` → AES-256 key) that may still open a live token, and the
        active one's ``kid``. A store initialised before temporary credentials existed gets its first key here."""
        since = self._now() - MAX_SESSION - 3600
        with self.db.read() as tx:
            rows = tx.rows(
                "SELECT kid, private_sealed, retired_at FROM signing_keys WHERE algorithm = 'A256GCM' "
                "AND (retired_at IS NULL OR retired_at > ?) ORDER BY created_at DESC, kid",
                (since,),
            )
        active = next((str(kid) for kid, _sealed, retired in rows if retired is None), None)
        if active is None:
            with self.db.write() as tx:
                if tx.one(_ACTIVE_SEALING_KEY) is None:
                    self._add_sealing_key(tx, self._now())
            return self.sealing_keys()
        return {str(kid): self._open(sealed, signing_key_context(kid)) for kid, sealed, _retired in rows}, active

    def rotate_sealing_key(self) -> tuple[str, list[str]]:
        """A new security-token sealing key; the active one is retired (it still opens the tokens it sealed
        until they expire, at most 24 hours). Returns the new ``kid`` and those retired."""
        with self.db.write() as tx:
            now = self._now()
            retired = [
                str(r[0])
                for r in tx.rows("SELECT kid FROM signing_keys WHERE retired_at IS NULL AND algorithm = 'A256GCM'")
            ]
            tx.run("UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL AND algorithm = 'A256GCM'", (now,))
            kid = self._add_sealing_key(tx, now)
        return kid, retired

    def workspace(self, workspace_id: str) -> Workspace | None:
        return self.read_workspace(workspace_id)[1]

    def read_workspace(self, workspace_id: str) -> tuple[int, Workspace | None]:
        with self.db.read() as tx:
            return _revision(tx), self._workspace(tx, workspace_id)

    def _workspace(self, tx: Tx, workspace_id: str) -> Workspace | None:
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

    def whitelist(self, scope: WhitelistScope, scope_id: str) -> IpWhitelist:
        return self.read_whitelist(scope, scope_id)[1]

    def read_whitelist(self, scope: WhitelistScope, scope_id: str) -> tuple[int, IpWhitelist]:
        with self.db.read() as tx:
            revision = _revision(tx)
            row = tx.one("SELECT entries FROM whitelists WHERE scope = ? AND scope_id = ?", (scope.value, scope_id))
        return revision, IpWhitelist() if row is None else IpWhitelist.parse(json.loads(row[0]))

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

    # -- master key ---------------------------------------------------------------------------------------

    def reseal_all(self, key_id: str) -> int:
        """Re-seal every secret under the ring's key ``key_id`` in one transaction, and record it as the
        store's sealing key; returns how many secrets were re-sealed."""
        count = 0
        with self.db.write() as tx:
            for access_key, user_id, sealed in tx.rows("SELECT access_key, user_id, secret_sealed FROM access_keys"):
                context = access_key_context(access_key, user_id)
                resealed = self.keyring.seal(self._open(sealed, context), context, key_id=key_id)
                tx.run("UPDATE access_keys SET secret_sealed = ? WHERE access_key = ?", (resealed, access_key))
                count += 1
            for kid, sealed in tx.rows("SELECT kid, private_sealed FROM signing_keys"):
                context = signing_key_context(kid)
                resealed = self.keyring.seal(self._open(sealed, context), context, key_id=key_id)
                tx.run("UPDATE signing_keys SET private_sealed = ? WHERE kid = ?", (resealed, kid))
                count += 1
            tx.run("UPDATE authmw_meta SET value = ? WHERE name = 'sealing_key'", (int(key_id, 16),))
        return count

    def _open(self, sealed: str, context: str) -> bytes:
        try:
            return self.keyring.open(sealed, context)
        except SealError as exc:
            raise ChangeRefused(f"cannot unseal a stored secret ({exc}): wrong master key?") from None


def ensure_system_policies(tx: Tx, now: int) -> None:
    """The shipped system policies, under their fixed ids (attachments refer to them in every store)."""
    for name, document in system_policy_documents().items():
        if tx.one("SELECT 1 FROM policies WHERE id = ?", (system_policy_id(name),)) is None:
            tx.run(
                "INSERT INTO policies VALUES (?, NULL, ?, ?, ?)",
                (system_policy_id(name), name, json.dumps(document), now),
            )


def access_key_context(access_key: str, user_id: str) -> str:
    """What an access-key secret is sealed to: its key and its owner (moving it to another user breaks it)."""
    return f"access_key:{access_key}:{user_id}"


_ACTIVE_SEALING_KEY = "SELECT 1 FROM signing_keys WHERE retired_at IS NULL AND algorithm = 'A256GCM'"
#: How long a retired signing key still verifies tokens: the longest token life (7 days) and an hour of slack.
RETIRED_KEYS_KEPT = 7 * 24 * 3600 + 3600


def signing_key_context(kid: str) -> str:
    return f"signing_key:{kid}"


def _foreign_key(key_id: str) -> str:
    return (
        f"the store's secrets are sealed under master key {key_id}, which this key ring does not hold: "
        "check AUTHMW_MASTER_KEY / AUTHMW_MASTER_KEY_FILE"
    )


_REVISION = "SELECT value FROM authmw_meta WHERE name = 'revision'"
# The revision and the key in one statement (so one snapshot): an unknown, inactive or disabled user's key
# still returns the revision row, with NULLs.
_KEY_LOOKUP = (
    "SELECT m.value, k.secret_sealed, k.user_id FROM authmw_meta m "
    "LEFT JOIN (SELECT a.secret_sealed, a.user_id FROM access_keys a JOIN users u ON u.id = a.user_id "
    "WHERE a.access_key = ? AND a.status = 'active' AND u.enabled = 1) k ON 1 = 1 "
    "WHERE m.name = 'revision'"
)


def _revision(tx: Tx) -> int:
    row = tx.one(_REVISION)
    return int(row[0]) if row else 0


def _attached(tx: Tx, principals: Sequence[tuple[str, str]]) -> tuple[tuple[str, str, str], ...]:
    """(id, name, document) of the policies attached to any of ``principals``, each once, ordered by id."""
    found: dict[str, tuple[str, str, str]] = {}
    for kind, principal_id in principals:
        for row in tx.rows(
            "SELECT p.id, p.name, p.document FROM attachments a JOIN policies p ON p.id = a.policy_id "
            "WHERE a.principal_type = ? AND a.principal_id = ?",
            (kind, principal_id),
        ):
            found[row[0]] = (row[0], row[1], row[2])
    return tuple(found[key] for key in sorted(found))


def system_policy_id(name: str) -> str:
    return "system-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
