"""Export a store to a plain document and import one back, all or nothing.

The document (YAML on the command line) lists every table's rows with their ids, so an import reproduces the
store exactly and a second export is identical. Secrets (access-key secrets, password hashes, token signing
keys) are left out unless asked for; then they are sealed under a passphrase (scrypt + AES-GCM), never in
clear and never under the store's master key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from authmw.errors import ChangeRefused, InvalidPolicy
from authmw.identity import IpWhitelist
from authmw.policy import parse_policy
from authmw.store.backends import Tx
from authmw.store.secrets import SealError, open_with_passphrase, seal_with_passphrase
from authmw.store.sqlstore import Store

__all__ = ["FORMAT", "export_store", "import_store"]

FORMAT = "authmw-export/1"

# (section, table, columns, secret columns, ORDER BY); parents before children so inserts satisfy references.
_TABLES: list[tuple[str, str, tuple[str, ...], tuple[str, ...], str]] = [
    ("domains", "domains", ("id", "name", "created_at"), (), "id"),
    ("projects", "projects", ("id", "domain_id", "name", "region", "created_at"), (), "id"),
    (
        "users",
        "users",
        ("id", "domain_id", "name", "enabled", "password_hash", "password_changed_at", "created_at"),
        ("password_hash",),
        "id",
    ),
    ("groups", "groups_", ("id", "domain_id", "name", "created_at"), (), "id"),
    ("group_members", "group_members", ("group_id", "user_id"), (), "group_id, user_id"),
    (
        "access_keys",
        "access_keys",
        ("access_key", "user_id", "secret_sealed", "status", "created_at"),
        ("secret_sealed",),
        "access_key",
    ),
    ("policies", "policies", ("id", "domain_id", "name", "document", "created_at"), (), "id"),
    (
        "attachments",
        "attachments",
        ("policy_id", "principal_type", "principal_id"),
        (),
        "principal_type, principal_id, policy_id",
    ),
    ("agencies", "agencies", ("id", "domain_id", "name", "trust_domain", "max_duration", "created_at"), (), "id"),
    ("workspaces", "workspaces", ("id", "domain_id", "name", "auth_type", "owner_id", "created_at"), (), "id"),
    (
        "workspace_grants",
        "workspace_grants",
        ("workspace_id", "principal_type", "principal_id"),
        (),
        "workspace_id, principal_type, principal_id",
    ),
    (
        "keypairs",
        "keypairs",
        ("id", "user_id", "name", "key_type", "public_key", "fingerprint", "created_at"),
        (),
        "id",
    ),
    ("whitelists", "whitelists", ("scope", "scope_id", "entries"), (), "scope, scope_id"),
    (
        "signing_keys",
        "signing_keys",
        ("kid", "algorithm", "private_sealed", "public_key", "created_at", "retired_at"),
        ("private_sealed",),
        "kid",
    ),
]
_BOOLEAN = {("users", "enabled")}
_JSON = {("policies", "document"), ("whitelists", "entries")}


def _context(section: str, row: Mapping[str, Any]) -> str:
    """What a sealed value is bound to (its table and row), in the store and in an export alike."""
    if section == "access_keys":
        return f"access_key:{row['access_key']}"
    if section == "signing_keys":
        return f"signing_key:{row['kid']}"
    return f"user_password:{row['id']}"


def export_store(store: Store, *, passphrase: str | None = None) -> dict[str, Any]:
    """Every row of the store; secrets only when a ``passphrase`` is given (sealed under it)."""
    document: dict[str, Any] = {"format": FORMAT}
    seal: Callable[[bytes, str], str] | None = None
    if passphrase is not None:
        document["secrets_salt"], seal = seal_with_passphrase(passphrase)
    with store.db.read() as tx:
        for section, table, columns, secret_columns, order in _TABLES:
            rows = []
            for values in tx.rows(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}"):  # noqa: S608
                row = dict(zip(columns, values, strict=True))
                for column in secret_columns:
                    if seal is None:
                        del row[column]
                        continue
                    if row[column] is None:
                        continue
                    plain = row[column].encode() if section == "users" else _open(store, row[column], section, row)
                    row[column] = seal(plain, _context(section, row))
                if section == "signing_keys" and seal is None:
                    continue  # a signing key without its private half is useless to import
                for key, value in row.items():
                    if (section, key) in _BOOLEAN:
                        row[key] = bool(value)
                    elif (section, key) in _JSON:
                        row[key] = json.loads(value)
                rows.append(row)
            document[section] = rows
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
    deleted first). Access keys need their secrets in the document; a document that carries secrets needs
    its ``passphrase``. Any problem refuses the whole import.
    """
    if not isinstance(document, Mapping) or document.get("format") != FORMAT:
        raise ChangeRefused(f"not an authmw export (expected format: {FORMAT})")
    opener = None
    if "secrets_salt" in document:
        if passphrase is None:
            raise ChangeRefused("this export carries sealed secrets: give its passphrase")
        try:
            opener = open_with_passphrase(passphrase, str(document["secrets_salt"]))
        except SealError as exc:
            raise ChangeRefused(str(exc)) from None
    prepared = _prepare(store, document, opener)
    with store.db.write() as tx:
        if not replace:
            _require_pristine(tx)
        # Without signing keys in the document (an export without secrets) the store keeps its own.
        tables = [t for t in _TABLES if t[0] != "signing_keys" or prepared["signing_keys"]]
        for _section, table, _columns, _secret, _order in reversed(tables):
            tx.run(f"DELETE FROM {table}")  # noqa: S608 - table names come from _TABLES
        for section, table, columns, _secret, _order in tables:
            marks = ", ".join("?" for _ in columns)
            tx.run_many(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", prepared[section])  # noqa: S608
        for table in ("domains", "workspaces"):
            if tx.one(f"SELECT 1 FROM {table} LIMIT 1") is None:  # noqa: S608
                raise ChangeRefused(f"the export has no {table}: not a complete authmw store")
    return {section: len(rows) for section, rows in prepared.items()}


def _prepare(
    store: Store, document: Mapping[str, Any], opener: Callable[[str, str], bytes] | None
) -> dict[str, list[tuple[Any, ...]]]:
    """Validate and convert every row before the transaction starts (secrets re-sealed to the store)."""
    prepared: dict[str, list[tuple[Any, ...]]] = {}
    for section, _table, columns, secret_columns, _order in _TABLES:
        rows = document.get(section, [])
        if not isinstance(rows, list):
            raise ChangeRefused(f"{section}: expected a list")
        converted = []
        for number, row in enumerate(rows, 1):
            where = f"{section}[{number}]"
            if not isinstance(row, Mapping) or set(row) - set(columns):
                raise ChangeRefused(f"{where}: expected a mapping of {', '.join(columns)}")
            values: dict[str, Any] = {column: row.get(column) for column in columns}
            for column in secret_columns:
                sealed = values[column]
                if sealed is None:
                    if column == "password_hash":
                        continue
                    raise ChangeRefused(f"{where}: no secret in the export (export with --include-secrets)")
                if opener is None:
                    raise ChangeRefused(f"{where}: secret present but the export has no secrets_salt")
                try:
                    plain = opener(str(sealed), _context(section, values))
                except SealError as exc:
                    raise ChangeRefused(f"{where}: {exc}") from None
                values[column] = (
                    plain.decode() if section == "users" else store.keyring.seal(plain, _context(section, values))
                )
            for column in columns:
                if (section, column) in _BOOLEAN:
                    values[column] = int(bool(values[column]))
                elif (section, column) in _JSON:
                    values[column] = json.dumps(values[column])
            _validate(section, values, where)
            converted.append(tuple(values[column] for column in columns))
        prepared[section] = converted
    return prepared


def _validate(section: str, values: Mapping[str, Any], where: str) -> None:
    try:
        if section == "policies":
            parse_policy(values["document"], name=str(values["name"]))
        elif section == "whitelists":
            IpWhitelist.parse(json.loads(values["entries"]))
    except InvalidPolicy as exc:
        raise ChangeRefused(f"{where}: " + "; ".join(exc.problems)) from None
    except (ValueError, TypeError) as exc:
        raise ChangeRefused(f"{where}: {exc}") from None


def _require_pristine(tx: Tx) -> None:
    counts = {
        table: int(row[0]) if (row := tx.one(f"SELECT COUNT(*) FROM {table}")) else 0  # noqa: S608
        for table in ("domains", "users", "groups_", "projects", "agencies", "keypairs", "whitelists")
    }
    workspaces = tx.one("SELECT COUNT(*) FROM workspaces WHERE domain_id IS NOT NULL")
    custom = tx.one("SELECT COUNT(*) FROM policies WHERE domain_id IS NOT NULL")
    if (
        counts["domains"] > 1
        or any(counts[t] for t in counts if t != "domains")
        or (workspaces and workspaces[0])
        or (custom and custom[0])
    ):
        raise ChangeRefused("the store already holds identities: import into a fresh store, or pass --replace")
