"""Export a store to a plain document and import one back: validated first, then all or nothing.

The document lists every table's rows with their ids, so an import reproduces the store exactly and a second
export is identical. Secrets (access-key secrets, password hashes, token signing keys) are left out unless a
passphrase is given; then they are sealed under keys derived from it (scrypt, AES-GCM) and the whole document
carries an HMAC, so nobody without the passphrase can alter it (say, move a key to an administrator). A
document without secrets carries no such protection: import only files you trust.

An import checks every row against the same rules as the administration verbs, and the model across rows
(references within one domain, two keys per user, workspace ``"0"``, whitelist limits, key-pair
fingerprints, shipped system policies) before it writes anything.
"""

from __future__ import annotations

import binascii
import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from authmw.clientaddr import IpWhitelist
from authmw.errors import ChangeRefused, InvalidPolicy
from authmw.models import AuthType, WhitelistScope
from authmw.policy import parse_policy
from authmw.policy.builtin import system_policy_documents
from authmw.sshaccess import LOGIN_USER
from authmw.store import keypairs, signingkeys
from authmw.store.admin import ensure_system_policies, system_policy_id
from authmw.store.database import Tx
from authmw.store.facade import Store
from authmw.store.keys import access_key_context, sealer, signing_key_context
from authmw.store.rules import (
    ACCESS_KEY,
    MAX_KEYS_PER_USER,
    POLICY_NAME,
    ROUTE,
    SECRET,
    check,
    check_max_duration,
    check_name,
    check_workspace_name,
)
from authmw.store.secrets import PassphraseBox, SealError, check_password_hash
from authmw.workspaces import DEFAULT_WORKSPACE_ID

__all__ = ["FORMAT", "export_store", "import_store"]

FORMAT = "authmw-export/1"
Row = dict[str, Any]

# (section, table, columns, secret column, ORDER BY); parents before children so inserts satisfy references.
_TABLES: list[tuple[str, str, tuple[str, ...], str | None, str]] = [
    ("domains", "domains", ("id", "name", "created_at"), None, "id"),
    ("projects", "projects", ("id", "domain_id", "name", "region", "created_at"), None, "id"),
    (
        "users",
        "users",
        ("id", "domain_id", "name", "enabled", "password_hash", "password_changed_at", "created_at"),
        "password_hash",
        "id",
    ),
    ("groups", "groups_", ("id", "domain_id", "name", "created_at"), None, "id"),
    ("group_members", "group_members", ("group_id", "user_id"), None, "group_id, user_id"),
    (
        "access_keys",
        "access_keys",
        ("access_key", "user_id", "secret_sealed", "status", "created_at"),
        "secret_sealed",
        "access_key",
    ),
    ("policies", "policies", ("id", "domain_id", "name", "document", "created_at"), None, "id"),
    ("agencies", "agencies", ("id", "domain_id", "name", "trust_domain", "max_duration", "created_at"), None, "id"),
    ("attachments", "attachments", ("policy_id", "principal_type", "principal_id"), None, "1, 2, 3"),
    (
        "project_attachments",
        "project_attachments",
        ("policy_id", "principal_type", "principal_id", "project_id"),
        None,
        "1, 2, 3, 4",
    ),
    ("workspaces", "workspaces", ("id", "domain_id", "name", "auth_type", "owner_id", "created_at"), None, "id"),
    ("workspace_grants", "workspace_grants", ("workspace_id", "principal_type", "principal_id"), None, "1, 2, 3"),
    (
        "keypairs",
        "keypairs",
        ("id", "user_id", "name", "key_type", "public_key", "fingerprint", "created_at", "expires_at"),
        None,
        "id",
    ),
    ("whitelists", "whitelists", ("scope", "scope_id", "entries"), None, "scope, scope_id"),
    (
        "notebooks",
        "notebooks",
        (
            "id",
            "domain_id",
            "name",
            "owner_id",
            "keypair_id",
            "workspace_id",
            "login_user",
            "whitelist",
            "created_at",
        ),
        None,
        "id",
    ),
    (
        "signing_keys",
        "signing_keys",
        ("kid", "algorithm", "private_sealed", "public_key", "created_at", "retired_at"),
        "private_sealed",
        "kid",
    ),
    ("revoked_tokens", "revoked_tokens", ("jti", "user_id", "expires_at"), None, "jti"),
]
_SECTIONS = {section for section, *_ in _TABLES}
_BOOLEAN = {("users", "enabled")}
_JSON = {("policies", "document"), ("whitelists", "entries"), ("notebooks", "whitelist")}
_HEX32 = "0123456789abcdef"


def _context(section: str, row: Mapping[str, Any]) -> str:
    """What a sealed value is bound to (its row), in the store and in an export alike."""
    if section == "access_keys":
        return access_key_context(row["access_key"], row["user_id"])
    if section == "signing_keys":
        return signing_key_context(row["kid"])
    return f"user_password:{row['id']}"


def _canonical(document: Mapping[str, Any]) -> bytes:
    body = {key: value for key, value in document.items() if key != "mac"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def export_store(store: Store, *, passphrase: str | None = None) -> dict[str, Any]:
    """Every row of the store; secrets only when a ``passphrase`` is given (sealed under it, and the
    document authenticated by it)."""
    box = None if passphrase is None else PassphraseBox.new(passphrase)
    document: dict[str, Any] = {"format": FORMAT}
    if box is not None:
        document["secrets_salt"] = box.salt_text
    with store.db.read() as tx:
        for section, table, columns, secret, order in _TABLES:
            if section == "signing_keys" and box is None:
                document[section] = []  # a signing key without its private half is useless to import
                continue
            rows = []
            for values in tx.rows(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}"):  # noqa: S608
                row = dict(zip(columns, values, strict=True))
                if secret is not None:
                    if box is None:
                        del row[secret]
                    elif row[secret] is not None:
                        plain = row[secret].encode() if section == "users" else _open(store, row[secret], section, row)
                        row[secret] = box.seal(plain, _context(section, row))
                for key, value in row.items():
                    if (section, key) in _BOOLEAN:
                        row[key] = bool(value)
                    elif (section, key) in _JSON:
                        row[key] = json.loads(value)
                rows.append(row)
            document[section] = rows
    if box is not None:
        document["mac"] = box.mac(_canonical(document))
    return document


def _open(store: Store, sealed: str, section: str, row: Mapping[str, Any]) -> bytes:
    try:
        return store.keyring.open(sealed, _context(section, row))
    except SealError as exc:
        raise ChangeRefused(f"cannot unseal a stored secret ({exc}): wrong master key?") from None


def import_store(
    store: Store, document: Mapping[str, Any], *, passphrase: str | None = None, replace: bool = False
) -> dict[str, int]:
    """Load an export into ``store`` in one transaction; returns the row count per section.

    The store must hold nothing beyond what ``authmw init`` creates, unless ``replace`` (then its content is
    deleted first). Access keys need their secrets in the document, and a document with secrets needs its
    ``passphrase``. Any problem refuses the whole import, naming the row.
    """
    if not isinstance(document, Mapping) or document.get("format") != FORMAT:
        raise ChangeRefused(f"not an authmw export (expected format: {FORMAT})")
    unknown = sorted(str(key) for key in set(document) - _SECTIONS - {"format", "secrets_salt", "mac"})
    if unknown:
        raise ChangeRefused(f"unknown export section(s): {', '.join(unknown)}")
    box = None
    if "secrets_salt" in document or "mac" in document:
        if passphrase is None:
            raise ChangeRefused("this export carries sealed secrets: give its passphrase")
        try:
            box = PassphraseBox.for_salt(passphrase, str(document.get("secrets_salt")))
            box.check_mac(_canonical(document), document.get("mac"))
        except (SealError, ValueError) as exc:
            raise ChangeRefused(str(exc)) from None
    rows = _Model(document, box, store.whitelist_limit).rows
    with store.db.write() as tx:
        if not replace:
            _require_pristine(tx)
        seal = sealer(tx, store.keyring)
        for section, _table, _columns, secret, _order in _TABLES:
            if secret is not None and section != "users":
                for row in rows[section]:
                    row[secret] = seal(row[secret], _context(section, row))
        # Without signing keys in the document (an export without secrets) the store keeps its own.
        tables = [t for t in _TABLES if t[0] != "signing_keys" or rows["signing_keys"]]
        for _section, table, _columns, _secret, _order in reversed(tables):
            tx.run(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
        for section, table, columns, _secret, _order in tables:
            insert = [tuple(_stored(section, column, row[column]) for column in columns) for row in rows[section]]
            marks = ", ".join("?" for _ in columns)
            tx.run_many(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", insert)  # noqa: S608
        ensure_system_policies(tx, max([r["created_at"] for r in rows["domains"]], default=0))
    return {section: len(found) for section, found in rows.items()}


def _stored(section: str, column: str, value: Any) -> Any:
    if (section, column) in _BOOLEAN:
        return int(value)
    if (section, column) in _JSON:
        return json.dumps(value)
    return value


def _require_pristine(tx: Tx) -> None:
    def count(sql: str) -> int:
        row = tx.one(sql)
        return int(row[0]) if row else 0

    busy = count("SELECT COUNT(*) FROM domains") > 1 or any(
        count(f"SELECT COUNT(*) FROM {table}")  # noqa: S608 - fixed table names
        for table in ("users", "groups_", "projects", "agencies", "keypairs", "whitelists")
    )
    busy = busy or count("SELECT COUNT(*) FROM workspaces WHERE domain_id IS NOT NULL") > 0
    if busy or count("SELECT COUNT(*) FROM policies WHERE domain_id IS NOT NULL") > 0:
        raise ChangeRefused("the store already holds identities: import into a fresh store, or pass --replace")


class _Model:
    """Validates a document row by row and across rows; ``rows`` holds the checked rows, secrets opened."""

    def __init__(self, document: Mapping[str, Any], box: PassphraseBox | None, whitelist_limit: int) -> None:
        self.box = box
        self.whitelist_limit = whitelist_limit
        self.rows: dict[str, list[Row]] = {}
        self.domain_of: dict[tuple[str, str], str | None] = {}  # (kind, id) -> domain id
        self.owner_of: dict[str, str] = {}  # key pair id -> user id
        for section, _table, columns, secret, _order in _TABLES:
            found = document.get(section, [])
            if not isinstance(found, list):
                raise ChangeRefused(f"{section}: expected a list")
            checked = []
            for number, row in enumerate(found, 1):
                where = f"{section}[{number}]"
                if not isinstance(row, Mapping) or not set(row) <= set(columns):
                    raise ChangeRefused(f"{where}: expected a mapping of {', '.join(columns)}")
                values: Row = {column: row.get(column) for column in columns}
                try:
                    if secret is not None:
                        values[secret] = self._secret(section, secret, values)
                    getattr(self, f"_{section}")(values)
                except ChangeRefused as exc:
                    raise ChangeRefused(f"{where}: {exc}") from None
                except (InvalidPolicy, ValueError, TypeError, KeyError) as exc:
                    detail = "; ".join(exc.problems) if isinstance(exc, InvalidPolicy) else str(exc)
                    raise ChangeRefused(f"{where}: {detail}") from None
                checked.append(values)
            self.rows[section] = checked
        self._across()

    # -- values --

    def _secret(self, section: str, column: str, values: Row) -> Any:
        sealed = values[column]
        if sealed is None:
            if section == "users":
                return None
            raise ChangeRefused("no secret in the export (export with --include-secrets and a passphrase)")
        if self.box is None or not isinstance(sealed, str):
            raise ChangeRefused("a secret without the export's passphrase protection")
        if section == "access_keys":
            check(ACCESS_KEY, "access key", values["access_key"], "8-128 letters and digits")
            _text(values["user_id"])
        elif section == "signing_keys":
            _text(values["kid"])
        try:
            plain = self.box.open(sealed, _context(section, values))
        except SealError as exc:
            raise ChangeRefused(str(exc)) from None
        if section == "users":
            return check_password_hash(plain.decode("utf-8"))
        if section == "access_keys" and not SECRET.fullmatch(plain.decode("utf-8", "replace")):
            raise ChangeRefused("the secret key breaks the secret-key rules")
        return plain

    def _ref(self, kind: str, key: Any, domain: str | None = None, *, any_domain: bool = False) -> str | None:
        """The domain of a referenced row (raising when it is absent or in another domain than ``domain``)."""
        if not isinstance(key, str) or (kind, key) not in self.domain_of:
            raise ChangeRefused(f"refers to a {kind} {key!r} the export does not hold")
        found = self.domain_of[(kind, key)]
        if not any_domain and found is not None and domain is not None and found != domain:
            raise ChangeRefused(f"refers to a {kind} of another domain")
        return found

    def _own(self, kind: str, values: Row, domain: str | None) -> None:
        key = values["id"]
        if not isinstance(key, str) or not (len(key) == 32 and all(c in _HEX32 for c in key)):
            raise ChangeRefused("id must be 32 lower-case hex digits")
        if (kind, key) in self.domain_of:
            raise ChangeRefused(f"duplicate {kind} id")
        self.domain_of[(kind, key)] = domain
        _time(values["created_at"])

    # -- one method per section --

    def _domains(self, v: Row) -> None:
        check_name("domain", v["name"])
        self._own("domain", v, None)
        self.domain_of[("domain", v["id"])] = v["id"]

    def _projects(self, v: Row) -> None:
        check_name("project", v["name"])
        check_name("region", v["region"])
        self._own("project", v, self._ref("domain", v["domain_id"]))

    def _users(self, v: Row) -> None:
        check_name("user", v["name"])
        if not isinstance(v["enabled"], bool):
            raise ChangeRefused("enabled must be true or false")
        if v["password_changed_at"] is not None:
            _time(v["password_changed_at"])
        self._own("user", v, self._ref("domain", v["domain_id"]))

    def _groups(self, v: Row) -> None:
        check_name("group", v["name"])
        self._own("group", v, self._ref("domain", v["domain_id"]))

    def _group_members(self, v: Row) -> None:
        self._ref("user", v["user_id"], self._ref("group", v["group_id"]))

    def _access_keys(self, v: Row) -> None:
        self._ref("user", v["user_id"])
        if v["status"] not in ("active", "inactive"):
            raise ChangeRefused("status must be active or inactive")
        _time(v["created_at"])

    def _policies(self, v: Row) -> None:
        check(POLICY_NAME, "policy name", v["name"], "1-64 of letters, digits, spaces, _ . @ -")
        if v["domain_id"] is None:
            shipped = system_policy_documents().get(v["name"])
            if shipped is None or v["id"] != system_policy_id(v["name"]):
                raise ChangeRefused("not one of the shipped system policies")
            _time(v["created_at"])
            v["document"] = shipped  # a system policy is always what this authmw ships
            self.domain_of[("policy", v["id"])] = None
            return
        if v["name"] in system_policy_documents():
            raise ChangeRefused(f"{v['name']!r} is the name of a system policy")
        # A backup restores what a store held: documents stored before the wildcard limits load as stored ones do
        # (the matcher is linear whatever their wildcards); the language rules still apply.
        parse_policy(v["document"], name=v["name"], wildcard_limits=False)
        self._own("policy", v, self._ref("domain", v["domain_id"]))

    def _attachments(self, v: Row) -> None:
        if v["principal_type"] not in ("group", "user", "agency"):
            raise ChangeRefused("principal_type must be group, user or agency")
        domain = self._ref(v["principal_type"], v["principal_id"])
        self._ref("policy", v["policy_id"], domain)

    def _project_attachments(self, v: Row) -> None:
        if v["principal_type"] not in ("group", "agency"):
            raise ChangeRefused("principal_type must be group or agency")
        domain = self._ref(v["principal_type"], v["principal_id"])
        self._ref("policy", v["policy_id"], domain)
        self._ref("project", v["project_id"], domain)

    def _agencies(self, v: Row) -> None:
        check_name("agency", v["name"])
        check_name("trusted domain", v["trust_domain"])
        check_max_duration(v["max_duration"], "max_duration")
        self._own("agency", v, self._ref("domain", v["domain_id"]))

    def _workspaces(self, v: Row) -> None:
        if v["id"] == DEFAULT_WORKSPACE_ID:
            shape = (v["domain_id"], v["name"], v["auth_type"], v["owner_id"])
            if shape != (None, "default", "PUBLIC", None) or ("workspace", "0") in self.domain_of:
                raise ChangeRefused('workspace "0" must be the shared PUBLIC workspace named default')
            _time(v["created_at"])
            self.domain_of[("workspace", "0")] = None
            return
        check_workspace_name(v["name"])
        AuthType(v["auth_type"])
        domain = self._ref("domain", v["domain_id"])
        if v["owner_id"] is not None:
            self._ref("user", v["owner_id"], domain)
        self._own("workspace", v, domain)
        self.domain_of[("internal", v["id"])] = domain if v["auth_type"] == "INTERNAL" else None

    def _workspace_grants(self, v: Row) -> None:
        if v["principal_type"] not in ("user", "group"):
            raise ChangeRefused("principal_type must be user or group")
        if self.domain_of.get(("internal", v["workspace_id"])) is None:
            raise ChangeRefused("grants apply to INTERNAL workspaces of the export only")
        self._ref(v["principal_type"], v["principal_id"], self._ref("workspace", v["workspace_id"]))

    def _keypairs(self, v: Row) -> None:
        check_name("key pair", v["name"])
        line, key_type = keypairs.parse_public_key(_text(v["public_key"]))
        if (line, key_type, keypairs.fingerprint(line)) != (v["public_key"], v["key_type"], v["fingerprint"]):
            raise ChangeRefused("public key, type and fingerprint do not agree")
        if v["expires_at"] is not None:
            _time(v["expires_at"])
        self._own("keypair", v, self._ref("user", v["user_id"]))
        self.owner_of[v["id"]] = v["user_id"]

    def _whitelists(self, v: Row) -> None:
        scope = WhitelistScope(v["scope"])
        if scope is WhitelistScope.ROUTE:
            check(ROUTE, "route", v["scope_id"], "an action or 'METHOD /path/template'")
        else:
            self._ref(scope.value, v["scope_id"])
        entries = v["entries"]
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise ChangeRefused("entries must be a list of addresses")
        whitelist = IpWhitelist.parse(entries)
        if list(whitelist.entries) != entries or not 0 < len(entries) <= self.whitelist_limit:
            raise ChangeRefused(f"entries must be 1-{self.whitelist_limit} distinct canonical addresses or CIDRs")

    def _notebooks(self, v: Row) -> None:
        check_name("notebook", v["name"])
        check(LOGIN_USER, "login account", v["login_user"], "a POSIX user name")
        domain = self._ref("domain", v["domain_id"])
        if v["owner_id"] is not None:
            self._ref("user", v["owner_id"], domain)
        if v["keypair_id"] is not None:
            self._ref("keypair", v["keypair_id"], domain)
            if self.owner_of.get(v["keypair_id"]) != v["owner_id"]:
                raise ChangeRefused("the notebook's key pair is not its owner's")
        if v["workspace_id"] is not None:
            self._ref("workspace", v["workspace_id"], domain)
        entries = v["whitelist"]
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise ChangeRefused("whitelist must be a list of addresses")
        if list(IpWhitelist.parse(entries).entries) != entries or len(entries) > self.whitelist_limit:
            raise ChangeRefused(f"whitelist must be 0-{self.whitelist_limit} distinct canonical addresses or CIDRs")
        self._own("notebook", v, domain)

    def _revoked_tokens(self, v: Row) -> None:
        token_id = v["jti"]
        if not isinstance(token_id, str) or not (len(token_id) == 32 and all(c in _HEX32 for c in token_id)):
            raise ChangeRefused("jti must be 32 lower-case hex digits")
        self._ref("user", v["user_id"])
        _time(v["expires_at"])

    def _signing_keys(self, v: Row) -> None:
        algorithm = v["algorithm"]
        if algorithm == "A256GCM":  # a security-token sealing key: 32 secret bytes, no public half
            if len(v["private_sealed"]) != 32 or v["public_key"] != "":
                raise ChangeRefused("malformed sealing key")
        elif algorithm not in signingkeys.TOKEN_ALGORITHMS or not isinstance(v["public_key"], str):
            raise ChangeRefused("signing keys are EdDSA, ES256 or RS256; sealing keys A256GCM")
        else:
            try:
                derived = signingkeys.private_key(algorithm, v["private_sealed"]).public_key()
                public = signingkeys.public_hex(signingkeys.public_key(algorithm, v["public_key"]))
            except (ValueError, TypeError, binascii.Error):
                raise ChangeRefused("malformed signing key") from None
            if signingkeys.public_hex(derived) != public or public != v["public_key"]:
                raise ChangeRefused("the signing key's public half does not match its private half")
        _time(v["created_at"])
        if v["retired_at"] is not None:
            _time(v["retired_at"])

    # -- across rows --

    def _across(self) -> None:
        if ("workspace", DEFAULT_WORKSPACE_ID) not in self.domain_of:
            raise ChangeRefused('the export has no default workspace "0": not a complete authmw store')
        if not self.rows["domains"]:
            raise ChangeRefused("the export has no domains: not a complete authmw store")
        per_user = Counter(row["user_id"] for row in self.rows["access_keys"])
        crowded = [user for user, n in per_user.items() if n > MAX_KEYS_PER_USER]
        if crowded:
            raise ChangeRefused(f"access_keys: user {crowded[0]} has more than {MAX_KEYS_PER_USER} keys")
        for section, column in (("access_keys", "access_key"), ("signing_keys", "kid")):
            duplicated = [k for k, n in Counter(row[column] for row in self.rows[section]).items() if n > 1]
            if duplicated:
                raise ChangeRefused(f"{section}: {duplicated[0]!r} appears twice")


def _time(value: Any) -> int:
    if type(value) is not int or not 0 <= value < 2**53:
        raise ChangeRefused("timestamps must be whole seconds since 1970")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.isprintable():
        raise ChangeRefused("expected printable text")
    return value
