"""Export and import: a crafted or tampered export never gets into a store (every rule, across rows too)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from authmw.errors import ChangeRefused
from authmw.store import Keyring, Store
from authmw.store.database import open_database
from authmw.store.secrets import PassphraseBox, SealError
from authmw.store.transfer import _canonical, _Model, export_store, import_store

PASSPHRASE = "a long export passphrase"
MASTER = bytes(range(32))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store with one of everything, exported with its secrets."""
    path = tmp_path_factory.mktemp("export") / "authmw.db"
    store = Store(open_database(f"sqlite:///{path}", create=True), Keyring.from_keys(MASTER))
    store.initialize()
    store.create_domain("acme")
    store.create_project("cn-north-4")
    store.create_user("alice")
    store.create_user("root")
    store.create_user("carol", domain="acme")
    store.create_group("admin")
    store.add_user_to_group("admin", "root")
    store.create_group("developers")
    store.add_user_to_group("developers", "alice")
    store.create_access_key("alice")
    store.create_access_key("root")
    policy = {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["modelarts:trainJob:*"]}]}
    store.create_policy("train", json.dumps(policy))
    store.attach_policy("train", group="developers")
    store.attach_policy("ModelArts CommonOperations", user="alice")
    store.create_agency("ma", trust="op_svc_modelarts", policies=["train"])
    store.attach_policy("train", group="developers", project="cn-north-4")  # granted on a project too
    store.attach_policy("ModelArts CommonOperations", agency="ma", project="cn-north-4")
    store.create_workspace("team-a", auth_type="INTERNAL", grant_users=["alice"], owner="root")
    store.create_keypair("laptop", user="alice")
    store.set_whitelist("user", "alice", ["10.0.0.0/8"])
    store.revoke_token("ab" * 16, store.find_user("alice").id, 4_000_000_000)
    document = export_store(store, passphrase=PASSPHRASE)
    store.close()
    return document


@pytest.fixture(scope="module")
def box(exported: dict[str, Any]) -> PassphraseBox:
    return PassphraseBox.for_salt(PASSPHRASE, exported["secrets_salt"])


def _short_sealing_key(document: dict[str, Any], box: PassphraseBox) -> None:
    row = next(r for r in document["signing_keys"] if r["algorithm"] == "A256GCM")
    row["private_sealed"] = box.seal(b"sixteen bytes...", f"signing_key:{row['kid']}")


def _row(document: dict[str, Any], section: str, **match: Any) -> dict[str, Any]:
    return next(r for r in document[section] if all(r[k] == v for k, v in match.items()))


def _user(document: dict[str, Any], name: str) -> str:
    return str(_row(document, "users", name=name)["id"])


def _domain(document: dict[str, Any], name: str) -> str:
    return str(_row(document, "domains", name=name)["id"])


Tamper = Callable[[dict[str, Any], PassphraseBox], None]


def _extra_key(d: dict[str, Any], box: PassphraseBox) -> None:
    alice = _user(d, "alice")
    for n in range(2):
        access = f"AKIDEXTRA{n:04d}"
        sealed = box.seal(b"s" * 32, f"access_key:{access}:{alice}")
        d["access_keys"].append(
            {"access_key": access, "user_id": alice, "secret_sealed": sealed, "status": "active", "created_at": 1}
        )


def _move_key_to_root(d: dict[str, Any], _box: PassphraseBox) -> None:
    _row(d, "access_keys", user_id=_user(d, "alice"))["user_id"] = _user(d, "root")


def _redefine_system_policy(d: dict[str, Any], _box: PassphraseBox) -> None:
    row = _row(d, "policies", name="ModelArts CommonOperations")
    row["domain_id"] = _domain(d, "default")
    row["id"] = "f" * 32


CRAFTED: dict[str, tuple[Tamper, str]] = {
    "three keys for one user": (_extra_key, "more than 2 keys"),
    "a revoked token of an unknown user": (
        lambda d, _b: d["revoked_tokens"][0].update(user_id="f" * 32),
        "does not hold",
    ),
    "a revoked token id that is not hex": (lambda d, _b: d["revoked_tokens"][0].update(jti="x"), "32 lower-case hex"),
    "a key moved to another user": (_move_key_to_root, "wrong passphrase or tampered"),
    "workspace id not hex": (
        lambda d, _b: _row(d, "workspaces", name="team-a").update(id="not-hex id\n"),
        "32 lower-case hex",
    ),
    "workspace name with a newline": (
        lambda d, _b: _row(d, "workspaces", name="team-a").update(name="x\ny"),
        "invalid workspace name",
    ),
    "a second shared workspace": (
        lambda d, _b: _row(d, "workspaces", name="team-a").update(domain_id=None),
        "refers to a domain",
    ),
    "no workspace 0": (
        lambda d, _b: d.update(workspaces=[w for w in d["workspaces"] if w["id"] != "0"]),
        'no default workspace "0"',
    ),
    "workspace 0 made private": (
        lambda d, _b: _row(d, "workspaces", id="0").update(auth_type="PRIVATE"),
        "shared PUBLIC workspace",
    ),
    "system policy redefined": (_redefine_system_policy, "name of a system policy"),
    "unknown system policy": (
        lambda d, _b: _row(d, "policies", name="ModelArts CommonOperations").update(name="Everything"),
        "shipped system policies",
    ),
    "whitelist over the limit": (
        lambda d, _b: _row(d, "whitelists", scope="user").update(entries=[f"192.0.2.{i}" for i in range(50)]),
        "entries must be 1-5",
    ),
    "whitelist entry not canonical": (
        lambda d, _b: _row(d, "whitelists", scope="user").update(entries=["10.0.0.0/8", "10.0.0.0/8"]),
        "distinct canonical",
    ),
    "whitelist entries of the wrong type": (
        lambda d, _b: _row(d, "whitelists", scope="user").update(entries=[5]),
        "list of addresses",
    ),
    "agency session too long": (
        lambda d, _b: _row(d, "agencies", name="ma").update(max_duration=10**9),
        "max_duration",
    ),
    "agency trusting anyone": (
        lambda d, _b: _row(d, "agencies", name="ma").update(trust_domain="*"),
        "invalid trusted domain name",
    ),
    "enabled as a string": (lambda d, _b: _row(d, "users", name="alice").update(enabled="false"), "true or false"),
    "a weak password hash": (
        lambda d, b: _row(d, "users", name="alice").update(
            password_hash=b.seal(b"scrypt$2$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + b"A" * 43 + b"=", "user_password:x")
        ),
        "wrong passphrase or tampered",
    ),
    "attachment to nobody": (
        lambda d, _b: d["attachments"].append(
            {"policy_id": _row(d, "policies", name="train")["id"], "principal_type": "user", "principal_id": "f" * 32}
        ),
        "refers to a user",
    ),
    "group member from another domain": (
        lambda d, _b: d["group_members"].append(
            {"group_id": _row(d, "groups", name="admin")["id"], "user_id": _user(d, "carol")}
        ),
        "another domain",
    ),
    "authorized_keys injection": (
        lambda d, _b: _row(d, "keypairs", name="laptop").update(
            public_key='command="/bin/sh" ' + _row(d, "keypairs", name="laptop")["public_key"]
        ),
        "OpenSSH public key",
    ),
    "fingerprint that does not match": (
        lambda d, _b: _row(d, "keypairs", name="laptop").update(fingerprint="SHA256:forged"),
        "do not agree",
    ),
    "timestamp out of range": (lambda d, _b: _row(d, "users", name="alice").update(created_at=2**70), "timestamps"),
    "grant on a PUBLIC workspace": (
        lambda d, _b: _row(d, "workspaces", name="team-a").update(auth_type="PUBLIC"),
        "INTERNAL workspaces",
    ),
    "unknown column": (lambda d, _b: _row(d, "users", name="alice").update(admin=True), "expected a mapping"),
    "a section that is not a list": (lambda d, _b: d.update(users={}), "expected a list"),
    "signing key of another algorithm": (
        lambda d, _b: d["signing_keys"][0].update(algorithm="none"),
        "signing keys are EdDSA, ES256 or RS256",
    ),
    "an EdDSA key relabelled ES256": (
        lambda d, _b: next(r for r in d["signing_keys"] if r["algorithm"] == "EdDSA").update(algorithm="ES256"),
        "malformed signing key",
    ),
    "a sealing key of the wrong size": (
        _short_sealing_key,
        "malformed sealing key",
    ),
    "signing key halves that do not match": (
        lambda d, _b: next(r for r in d["signing_keys"] if r["algorithm"] == "EdDSA").update(public_key="00" * 32),
        "does not match",
    ),
}


@pytest.mark.parametrize("case", CRAFTED, ids=list(CRAFTED))
def test_crafted_exports_are_refused_even_with_the_passphrase(
    exported: dict[str, Any], box: PassphraseBox, case: str
) -> None:
    tamper, message = CRAFTED[case]
    document = copy.deepcopy(exported)
    tamper(document, box)
    with pytest.raises(ChangeRefused, match=message):
        _Model(document, box, whitelist_limit=5)


def test_the_untouched_export_passes(exported: dict[str, Any], box: PassphraseBox) -> None:
    model = _Model(copy.deepcopy(exported), box, whitelist_limit=5)
    assert len(model.rows["access_keys"]) == 2


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Store]:
    store = Store(open_database(f"sqlite:///{tmp_path / 'target.db'}", create=True), Keyring.from_keys(b"\x07" * 32))
    store.initialize()
    yield store
    store.close()


def test_a_tampered_export_is_refused_without_the_passphrase(exported: dict[str, Any], target: Store) -> None:
    document = copy.deepcopy(exported)
    _row(document, "group_members", user_id=_user(document, "root"))["user_id"] = _user(document, "alice")
    before = export_store(target)
    with pytest.raises(ChangeRefused, match="tampered"):
        import_store(target, document, passphrase=PASSPHRASE)
    with pytest.raises(ChangeRefused, match="tampered"):
        import_store(target, exported, passphrase="another passphrase")
    with pytest.raises(ChangeRefused, match="give its passphrase"):
        import_store(target, exported)
    assert export_store(target) == before


def test_an_export_imports_and_reads_back(exported: dict[str, Any], target: Store) -> None:
    counts = import_store(target, copy.deepcopy(exported), passphrase=PASSPHRASE)
    assert counts["users"] == 3 and counts["access_keys"] == 2
    plain = {k: v for k, v in exported.items() if k not in ("secrets_salt", "mac", "signing_keys")}
    again = export_store(target)
    for section, rows in plain.items():
        if section == "format":
            continue
        expected = [{k: v for k, v in row.items() if k not in ("password_hash", "secret_sealed")} for row in rows]
        assert again[section] == expected, section
    assert target.token_revoked("ab" * 16) and not target.token_revoked("cd" * 16)
    alice = target.find_user("alice")
    principal = target.principal(alice.id)
    assert principal is not None and principal.policies.decide("modelarts:trainJob:create").allowed
    assert {k.access for k in target.list_access_keys("alice")}


def test_unknown_sections_and_formats_are_refused(exported: dict[str, Any], target: Store) -> None:
    with pytest.raises(ChangeRefused, match="not an authmw export"):
        import_store(target, {"format": "something else"})
    with pytest.raises(ChangeRefused, match="unknown export section"):
        import_store(target, {**exported, "superusers": []}, passphrase=PASSPHRASE)


def test_the_mac_covers_the_whole_document(exported: dict[str, Any], box: PassphraseBox) -> None:
    document = copy.deepcopy(exported)
    box.check_mac(_canonical(document), document["mac"])
    document["policies"][0]["created_at"] += 1
    with pytest.raises(SealError, match="tampered"):
        box.check_mac(_canonical(document), document["mac"])


def test_a_policy_stored_before_the_wildcard_limits_is_restored(exported: dict[str, Any], box: PassphraseBox) -> None:
    """A backup restores what a store held: over-limit wildcards (the matcher is linear) load as stored ones do."""
    document = copy.deepcopy(exported)
    wild = {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["modelarts:" + "*a" * 12 + ":*"]}]}
    _row(document, "policies", name="train")["document"] = json.dumps(wild)
    model = _Model(document, box, whitelist_limit=5)
    assert [row["name"] for row in model.rows["policies"] if row["domain_id"] is not None] == ["train"]
