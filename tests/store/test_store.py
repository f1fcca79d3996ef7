"""The store's model rules, on SQLite and PostgreSQL alike (one suite, both backends)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from authmw.clientaddr import IpWhitelist
from authmw.errors import ChangeRefused, ConfigurationError, NotFound, StoreUnavailable
from authmw.models import AuthType, WhitelistScope
from authmw.store import Keyring, Store, open_store
from authmw.store.database import open_database
from authmw.store.keys import access_key_context
from authmw.store.schema import SCHEMA_VERSION
from authmw.store.secrets import SealError, key_id_of, new_master_key, verify_password, write_key_file
from authmw.workspaces import DEFAULT_WORKSPACE_ID, can_access_workspace
from tests.support.pgutil import pg_schema

ROOT = Path(__file__).resolve().parents[2]
MASTER = bytes(range(32))  # the master key of the ``keyring`` fixture
ALLOW_TRAIN = {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["modelarts:trainJob:*"]}]}
DENY_DELETE = {"Version": "1.1", "Statement": [{"Effect": "Deny", "Action": ["modelarts:trainJob:delete"]}]}


def test_initialize_is_idempotent_and_creates_the_defaults(store: Store) -> None:
    assert store.schema_version() == SCHEMA_VERSION
    before = store.revision()
    store.initialize()
    assert store.list_users() == []
    workspace = store.workspace(DEFAULT_WORKSPACE_ID)
    assert workspace is not None
    assert (workspace.name, workspace.auth_type, workspace.domain_id) == ("default", AuthType.PUBLIC, None)
    assert store.revision() > before  # every write transaction moves the revision
    with store.db.read() as tx:
        assert tx.one("SELECT COUNT(*) FROM signing_keys WHERE algorithm = 'EdDSA'")[0] == 1
        assert tx.one("SELECT COUNT(*) FROM signing_keys WHERE algorithm = 'A256GCM'")[0] == 1  # sealing key
        assert tx.one("SELECT COUNT(*) FROM domains WHERE name = 'default'")[0] == 1


def test_migrate_on_an_up_to_date_store_does_nothing(store: Store) -> None:
    assert store.migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)


def test_commands_refuse_an_uninitialised_store(store_url: str, keyring: Keyring) -> None:
    with contextlib.ExitStack() as stack:
        url = (
            store_url.replace("authmw.db", "other.db")
            if store_url.startswith("sqlite")
            else stack.enter_context(pg_schema())
        )
        fresh = Store(open_database(url, create=True), keyring)
        stack.callback(fresh.close)
        assert fresh.schema_version() == 0
        with pytest.raises(ChangeRefused, match="authmw init"):
            fresh.require_schema()
        fresh.initialize()
        fresh.require_schema()


def test_domains_projects_and_names(store: Store) -> None:
    domain = store.create_domain("acme")
    assert len(domain.id) == 32
    with pytest.raises(ChangeRefused, match="already exists"):
        store.create_domain("acme")
    project = store.create_project("cn-north-4_dev", domain="acme")
    assert project.region == "cn-north-4"
    assert store.create_project("cn-north-4_dev").domain_id != project.domain_id  # per-domain names
    with pytest.raises(NotFound):
        store.create_project("x-1", domain="nope")
    for bad in ("", "1abc", "a b", "x" * 65, "semi;colon", "ünï"):
        with pytest.raises(ChangeRefused, match="invalid"):
            store.create_domain(bad)


def test_users_groups_enable_disable(store: Store) -> None:
    alice = store.create_user("alice", password="correct horse")
    store.create_user("bob")
    with pytest.raises(ChangeRefused, match="already exists"):
        store.create_user("alice")
    with pytest.raises(ChangeRefused, match="8-128"):
        store.create_user("carol", password="short")
    assert [u.name for u in store.list_users()] == ["alice", "bob"]
    store.create_group("developers")
    store.add_user_to_group("developers", "alice")
    with pytest.raises(ChangeRefused, match="already in group"):
        store.add_user_to_group("developers", "alice")
    with pytest.raises(NotFound, match="no user"):
        store.add_user_to_group("developers", "nobody")
    principal = store.principal(alice.id)
    assert principal is not None and principal.user_name == "alice" and len(principal.groups) == 1
    assert not principal.is_admin
    store.set_user_enabled("alice", False)
    assert store.principal(alice.id) is None
    assert store.find_user("alice").enabled is False
    store.set_user_enabled("alice", True)
    assert store.principal(alice.id) is not None


def test_passwords_are_scrypt_hashes(store: Store) -> None:
    user = store.create_user("alice", password="correct horse")
    with store.db.read() as tx:
        stored = tx.one("SELECT password_hash FROM users WHERE id = ?", (user.id,))[0]
    assert stored.startswith("scrypt$") and "correct horse" not in stored
    assert verify_password("correct horse", stored)
    assert not verify_password("wrong horse!", stored)
    store.update_user("alice", password="battery staple")
    with store.db.read() as tx:
        assert verify_password("battery staple", tx.one("SELECT password_hash FROM users")[0])


def test_production_hashes_passwords_at_the_full_cost() -> None:
    """The test run hashes at a test cost (tests/conftest.py); a process of its own, without the test run's
    sitecustomize, shows what production does: N=2**17, r=8, p=1, and twice N for export passphrases."""
    script = (
        "from authmw.store import secrets as s\n"
        "h = s.hash_password('correct horse')\n"
        "print(h.rsplit('$', 2)[0], s.verify_password('correct horse', h), s.verify_password('wrong horse', h))\n"
        "print(s._EXPORT_N)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # this checkout's authmw, and no test-cost hook
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["scrypt$131072$8$1", "True", "False", str(2**18)]


def test_access_keys_lifecycle_and_limit(store: Store) -> None:
    user = store.create_user("alice")
    first = store.create_access_key("alice")
    assert len(first.access) == 20 and len(first.secret) == 40 and first.status == "active"
    assert first.secret not in repr(first)
    found = store.get_access_key(first.access)
    assert found is not None and found.secret_key == first.secret and found.owner == user.id
    second = store.create_access_key("alice", access_key="AKIDEXAMPLE1", secret_key="s" * 32)
    with pytest.raises(ChangeRefused, match="already has 2 access keys"):
        store.create_access_key("alice")
    store.set_access_key_status(second.access, False)
    assert store.get_access_key(second.access) is None  # inactive ≡ unknown
    assert {k.access: k.status for k in store.list_access_keys("alice")} == {
        first.access: "active",
        second.access: "inactive",
    }
    store.set_access_key_status(second.access, True)
    assert store.get_access_key(second.access) is not None
    store.delete_access_key(second.access)
    assert store.get_access_key(second.access) is None
    with pytest.raises(NotFound):
        store.delete_access_key(second.access)
    store.create_access_key("alice")  # a deleted key frees its slot
    store.set_user_enabled("alice", False)
    assert store.get_access_key(first.access) is None  # a disabled user's keys stop working


@pytest.mark.parametrize(
    ("access", "secret", "message"),
    [
        ("AK", "s" * 32, "access key"),
        ("AK with space", "s" * 32, "access key"),
        ("AKIDEXAMPLE1", "short", "secret key"),
        ("AKIDEXAMPLE1", "has space in it" * 2, "secret key"),
        ("AKIDEXAMPLE1", None, "both"),
    ],
)
def test_chosen_keys_are_validated(store: Store, access: str, secret: str | None, message: str) -> None:
    store.create_user("alice")
    with pytest.raises(ChangeRefused, match=message):
        store.create_access_key("alice", access_key=access, secret_key=secret)
    assert store.list_access_keys("alice") == []


def test_access_key_ids_are_unique_across_users(store: Store) -> None:
    store.create_user("alice")
    store.create_user("bob")
    store.create_access_key("alice", access_key="AKIDEXAMPLE1", secret_key="s" * 32)
    with pytest.raises(ChangeRefused, match="already exists"):
        store.create_access_key("bob", access_key="AKIDEXAMPLE1", secret_key="t" * 32)


def test_sealed_secrets_are_bound_to_their_row(store: Store) -> None:
    store.create_user("alice")
    one = store.create_access_key("alice")
    two = store.create_access_key("alice")
    with store.db.write() as tx:
        sealed = tx.one("SELECT secret_sealed FROM access_keys WHERE access_key = ?", (one.access,))[0]
        tx.run("UPDATE access_keys SET secret_sealed = ? WHERE access_key = ?", (sealed, two.access))
    with pytest.raises(StoreUnavailable):
        store.get_access_key(two.access)  # fail closed: never verify under a swapped secret


def test_a_store_opened_with_another_master_key_fails_closed(store_url: str, store: Store) -> None:
    key = store.create_access_key(store.create_user("alice").name)
    other = Store(open_database(store_url), Keyring.from_keys(b"\x01" * 32))
    try:
        with pytest.raises(StoreUnavailable, match="unsealed"):
            other.get_access_key(key.access)
    finally:
        other.close()


def test_policies_validated_and_attached(store: Store) -> None:
    store.create_user("alice")
    store.create_group("developers")
    store.add_user_to_group("developers", "alice")
    store.create_policy("train", json.dumps(ALLOW_TRAIN))
    store.create_policy("no-delete", json.dumps(DENY_DELETE).encode())
    with pytest.raises(ChangeRefused, match="already exists"):
        store.create_policy("train", json.dumps(ALLOW_TRAIN))
    with pytest.raises(ChangeRefused, match="invalid policy 'bad'"):
        store.create_policy("bad", '{"Version": "1.1", "Statement": [{"Effect": "Maybe", "Action": ["a:b:c"]}]}')
    with pytest.raises(ChangeRefused, match="system policy"):
        store.create_policy("ModelArts FullAccess", json.dumps(ALLOW_TRAIN))
    store.attach_policy("train", group="developers")
    store.attach_policy("no-delete", user="alice")
    with pytest.raises(ChangeRefused, match="already attached"):
        store.attach_policy("train", group="developers")
    with pytest.raises(ChangeRefused, match="exactly one"):
        store.attach_policy("train", group="developers", user="alice")
    with pytest.raises(NotFound, match="no policy"):
        store.attach_policy("missing", user="alice")
    principal = store.principal(store.find_user("alice").id)
    assert principal is not None
    assert principal.policies.decide("modelarts:trainJob:create").allowed
    denied = principal.policies.decide("modelarts:trainJob:delete")
    assert (denied.allowed, denied.explicit, denied.policy) == (False, True, "no-delete")
    assert not principal.policies.decide("modelarts:notebook:create").allowed


def test_system_policies_attach_by_name(store: Store) -> None:
    store.create_user("alice")
    store.attach_policy("ModelArts CommonOperations", user="alice")
    principal = store.principal(store.find_user("alice").id)
    assert principal is not None
    assert principal.policies.decide("modelarts:notebook:create").allowed
    assert not principal.policies.decide("modelarts:pool:create").allowed


def test_policies_are_per_domain(store: Store) -> None:
    store.create_domain("acme")
    store.create_user("mallory", domain="acme")
    store.create_policy("train", json.dumps(ALLOW_TRAIN))  # in domain "default"
    with pytest.raises(NotFound):
        store.attach_policy("train", user="mallory", domain="acme")


def test_agencies(store: Store) -> None:
    store.create_policy("train", json.dumps(ALLOW_TRAIN))
    agency = store.create_agency(
        "modelarts_agency", trust="op_svc_modelarts", policies=["train", "ModelArts CommonOperations"]
    )
    assert (agency.trust_domain, agency.max_duration) == ("op_svc_modelarts", 86_400)
    assert set(store.show_agency("modelarts_agency").policies) == {"train", "ModelArts CommonOperations"}
    with pytest.raises(ChangeRefused, match="already exists"):
        store.create_agency("modelarts_agency", trust="op_svc_modelarts")
    with pytest.raises(ChangeRefused, match="900-86400"):
        store.create_agency("short", trust="op_svc_modelarts", max_duration=60)
    with pytest.raises(NotFound):
        store.create_agency("ghost", trust="op_svc_modelarts", policies=["missing"])
    with pytest.raises(NotFound):
        store.show_agency("ghost")  # the refused create left nothing behind
    store.create_policy("deny", json.dumps(DENY_DELETE))
    store.attach_policy("deny", agency="modelarts_agency")
    assert len(store.show_agency("modelarts_agency").policies) == 3


def test_workspaces_and_access_rules(store: Store) -> None:
    alice = store.create_user("alice")
    bob = store.create_user("bob")
    carol = store.create_user("carol")
    admin = store.create_user("root")
    store.create_group("admin")
    store.add_user_to_group("admin", "root")
    store.create_group("reviewers")
    store.add_user_to_group("reviewers", "carol")
    public = store.create_workspace("team-public")
    private = store.create_workspace("team-private", auth_type="private", owner="alice")
    internal = store.create_workspace(
        "team-internal", auth_type="INTERNAL", owner="alice", grant_users=["bob"], grant_groups=["reviewers"]
    )
    assert len(internal.id) == 32 and all(c in "0123456789abcdef" for c in internal.id)
    principals = {u.name: store.principal(u.id) for u in (alice, bob, carol, admin)}
    assert principals["root"] is not None and principals["root"].is_admin

    def who(workspace_id: str) -> set[str]:
        workspace = store.workspace(workspace_id)
        assert workspace is not None
        return {name for name, p in principals.items() if p is not None and can_access_workspace(p, workspace)}

    assert who(public.id) == who(DEFAULT_WORKSPACE_ID) == {"alice", "bob", "carol", "root"}
    assert who(private.id) == {"alice", "root"}
    assert who(internal.id) == {"alice", "bob", "carol", "root"}
    store.create_user("dave")
    dave = store.principal(store.find_user("dave").id)
    assert dave is not None
    internal_ws = store.workspace(internal.id)
    assert internal_ws is not None and not can_access_workspace(dave, internal_ws)
    assert store.find_workspace("team-internal").id == internal.id
    assert store.find_workspace("default").id == DEFAULT_WORKSPACE_ID
    assert store.workspace("f" * 32) is None


def test_workspaces_of_another_domain_are_closed(store: Store) -> None:
    store.create_domain("acme")
    store.create_user("mallory", domain="acme")
    workspace = store.create_workspace("team-public")
    mallory = store.principal(store.find_user("mallory", domain="acme").id)
    found = store.workspace(workspace.id)
    assert mallory is not None and found is not None and not can_access_workspace(mallory, found)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("abc", {}, "4-64"),
        ("x" * 65, {}, "4-64"),
        ("has space", {}, "4-64"),
        ("default", {}, "reserved"),
        ("DEFAULT", {}, "reserved"),
        ("team-a", {"auth_type": "OPEN"}, "PUBLIC, PRIVATE or INTERNAL"),
        ("team-a", {"grant_users": ["alice"]}, "INTERNAL"),
        ("team-a", {"auth_type": "INTERNAL", "grant_users": ["nobody"]}, "no user"),
        ("team-a", {"owner": "nobody"}, "no user"),
    ],
)
def test_workspace_rules(store: Store, name: str, kwargs: dict[str, object], message: str) -> None:
    store.create_user("alice")
    revision = store.revision()
    with pytest.raises(ChangeRefused, match=message):
        store.create_workspace(name, **kwargs)  # type: ignore[arg-type]
    assert store.revision() == revision  # nothing written, not even half a workspace
    with store.db.read() as tx:
        assert tx.one("SELECT COUNT(*) FROM workspaces")[0] == 1


def test_workspace_names_are_unique_per_domain(store: Store) -> None:
    store.create_workspace("team-a")
    with pytest.raises(ChangeRefused, match="already exists"):
        store.create_workspace("team-a")
    store.create_domain("acme")
    store.create_workspace("team-a", domain="acme")


def test_key_pairs(store: Store) -> None:
    store.create_user("alice")
    generated = store.create_keypair("laptop", user="alice")
    assert generated.private_key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert generated.private_key not in repr(generated)
    private = serialization.load_ssh_private_key(generated.private_key.encode(), password=None)
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert public.decode() == generated.public_key
    assert generated.fingerprint.startswith("SHA256:") and not generated.fingerprint.endswith("=")
    rsa = store.create_keypair("server", user="alice", key_type="rsa")
    assert rsa.public_key.startswith("ssh-rsa ")
    assert serialization.load_ssh_public_key(rsa.public_key.encode()).key_size == 3072  # type: ignore[union-attr]
    imported = store.import_keypair("ci", user="alice", public_key=generated.public_key + " comment@host\n")
    assert imported.fingerprint == generated.fingerprint
    with pytest.raises(ChangeRefused, match="already has a key pair"):
        store.import_keypair("ci", user="alice", public_key=generated.public_key)
    lines = store.authorized_keys("alice").splitlines()
    assert lines == [
        f"{generated.public_key} authmw:alice/ci",
        f"{generated.public_key} authmw:alice/laptop",
        f"{rsa.public_key} authmw:alice/server",
    ]
    with store.db.read() as tx:
        stored = " ".join(str(v) for row in tx.rows("SELECT * FROM keypairs") for v in row)
    assert "PRIVATE" not in stored and generated.private_key not in stored


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a key",
        "ssh-ed25519 !!!notbase64",
        "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEUvcJkVQkBDW/UBWRGR9VLlgVCUmbf327pD4lMsgxLy\nssh-ed25519 AAAA",
    ],
)
def test_bad_public_keys_are_refused(store: Store, text: str) -> None:
    store.create_user("alice")
    with pytest.raises(ChangeRefused):
        store.import_keypair("bad", user="alice", public_key=text)
    assert store.keypairs("alice") == []


def test_short_rsa_keys_are_refused(store: Store) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    line = weak.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    store.create_user("alice")
    with pytest.raises(ChangeRefused, match="2048"):
        store.import_keypair("weak", user="alice", public_key=line)


def test_whitelists(store: Store) -> None:
    alice = store.create_user("alice")
    workspace = store.create_workspace("team-a")
    assert store.whitelist(WhitelistScope.USER, alice.id) == IpWhitelist()
    store.set_whitelist("user", "alice", ["192.0.2.7", "10.0.0.0/8", "2001:db8::/32"])
    whitelist = store.whitelist(WhitelistScope.USER, alice.id)
    assert whitelist.entries == ("192.0.2.7", "10.0.0.0/8", "2001:db8::/32")
    assert whitelist.allows("10.1.2.3") and whitelist.allows("192.0.2.7") and whitelist.allows("2001:db8::1")
    assert whitelist.allows("::ffff:10.9.9.9")  # IPv4-mapped IPv6 is the IPv4 address
    assert not whitelist.allows("192.0.2.8") and not whitelist.allows("2001:db9::1")
    assert not whitelist.allows(None) and not whitelist.allows("garbage")
    store.set_whitelist(WhitelistScope.WORKSPACE, "team-a", ["198.51.100.0/24"])
    assert store.whitelist(WhitelistScope.WORKSPACE, workspace.id).allows("198.51.100.9")
    store.set_whitelist(WhitelistScope.ROUTE, "POST /v2/{project_id}/training-jobs", ["203.0.113.1"])
    assert store.whitelist(WhitelistScope.ROUTE, "POST /v2/{project_id}/training-jobs").allows("203.0.113.1")
    store.set_whitelist("user", "alice", [])
    assert store.whitelist(WhitelistScope.USER, alice.id).allows("8.8.8.8")  # empty allows all


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["10.0.0.1/8"], "host bits"),
        (["999.1.1.1"], "not an IP"),
        (["example.com"], "not an IP"),
        ([f"192.0.2.{i}" for i in range(6)], "at most 5"),
    ],
)
def test_bad_whitelists_are_refused(store: Store, entries: list[str], message: str) -> None:
    alice = store.create_user("alice")
    store.set_whitelist("user", "alice", ["192.0.2.1"])
    with pytest.raises(ChangeRefused, match=message):
        store.set_whitelist("user", "alice", entries)
    assert store.whitelist(WhitelistScope.USER, alice.id).entries == ("192.0.2.1",)  # unchanged


def test_the_whitelist_limit_is_configurable(store_url: str, store: Store, keyring: Keyring) -> None:
    store.create_user("alice")
    wide = Store(open_database(store_url), keyring, whitelist_limit=20)
    try:
        assert len(wide.set_whitelist("user", "alice", [f"192.0.2.{i}" for i in range(20)]).networks) == 20
    finally:
        wide.close()


def test_reseal_under_a_new_master_key(store: Store) -> None:
    store.create_user("alice")
    key = store.create_access_key("alice")
    new = new_master_key()
    store.keyring.replace([new, MASTER])
    assert store.reseal_all(key_id_of(new)) == 3  # the access key, the token signing and the sealing key
    with store.db.read() as tx:
        sealed = tx.one("SELECT secret_sealed FROM access_keys")[0]
    assert sealed.split(".")[1] == key_id_of(new)
    with pytest.raises(SealError):
        Keyring.from_keys(MASTER).open(sealed, access_key_context(key.access, store.find_user("alice").id))
    store.keyring.replace([new])
    found = store.get_access_key(key.access)
    assert found is not None and found.secret_key == key.secret
    # writers follow the recorded key, even from a ring whose first key is another one
    store.keyring.replace([MASTER, new])
    store.create_user("bob")
    bob = store.create_access_key("bob")
    with store.db.read() as tx:
        assert tx.one("SELECT secret_sealed FROM access_keys WHERE access_key = ?", (bob.access,))[0].split(".")[
            1
        ] == key_id_of(new)


def test_a_ring_without_the_stores_key_is_refused(store_url: str, store: Store) -> None:
    store.create_user("alice")
    store.create_access_key("alice")
    other = Store(open_database(store_url), Keyring.from_keys(b"\x01" * 32))
    try:
        with pytest.raises(ConfigurationError, match="does not hold"):
            other.check_keyring()
        with pytest.raises(ChangeRefused, match="does not hold"):
            other.create_access_key("alice")  # never a secret sealed under a foreign key
    finally:
        other.close()


def test_a_key_moved_to_another_user_does_not_open(store: Store) -> None:
    store.create_user("alice")
    root = store.create_user("root")
    key = store.create_access_key("alice")
    with store.db.write() as tx:
        tx.run("UPDATE access_keys SET user_id = ? WHERE access_key = ?", (root.id, key.access))
    with pytest.raises(StoreUnavailable):
        store.get_access_key(key.access)


def test_workspace_names_never_look_like_ids(store: Store) -> None:
    with pytest.raises(ChangeRefused, match="32 hex"):
        store.create_workspace("0123456789abcdef0123456789abcdef")
    store.create_workspace("0123456789ABCDEF0123456789ABCDEF")  # upper case is a name, ids are lower case
    store.create_domain("acme")
    other = store.create_workspace("team-a", domain="acme", auth_type="PRIVATE")
    with pytest.raises(NotFound):
        store.find_workspace(other.id)  # another domain's workspace, even by id
    assert store.find_workspace(other.id, domain="acme").name == "team-a"


def test_a_failing_change_writes_nothing(store: Store) -> None:
    store.create_policy("train", json.dumps(ALLOW_TRAIN))
    revision = store.revision()
    with pytest.raises(NotFound):
        store.create_agency("half", trust="op_svc_modelarts", policies=["train", "missing"])
    with store.db.read() as tx:
        assert tx.one("SELECT COUNT(*) FROM agencies")[0] == 0
        assert tx.one("SELECT COUNT(*) FROM attachments")[0] == 0
    assert store.revision() == revision


def test_whitelist_entries_are_normalised() -> None:
    mapped = IpWhitelist.parse(["::ffff:10.0.0.0/104", "::ffff:192.0.2.1", "10.0.0.0/8", "192.0.2.1/32"])
    assert mapped.entries == ("10.0.0.0/8", "192.0.2.1")
    assert mapped.allows("::ffff:10.1.2.3") and mapped.allows("10.1.2.3")
    with pytest.raises(ValueError, match="zone"):
        IpWhitelist.parse(["fe80::1%eth0"])
    with pytest.raises(ValueError):
        IpWhitelist.parse([""])


def test_a_value_read_before_a_rotation_still_opens_after_the_ring_reloads(tmp_path: Path) -> None:
    old, new = new_master_key(), new_master_key()
    path = tmp_path / "authmw.key"
    write_key_file(path, [old])
    ring = Keyring.from_file(path)
    before = ring.seal(b"secret", "row")  # read by one thread...
    write_key_file(path, [new])  # ...while a rotation finishes elsewhere
    after = Keyring.from_keys(new).seal(b"secret", "row")
    assert ring.open(after, "row") == b"secret"  # another thread meets the new key: the ring reloads
    assert ring.open(before, "row") == b"secret"  # and the first thread's value still opens


def test_open_store_refuses_a_foreign_ring_and_a_fresh_key_for_a_sealed_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'authmw.db'}"
    env = {"AUTHMW_MASTER_KEY_FILE": str(tmp_path / "authmw.key")}
    store = open_store(url, create=True, environ=env)
    store.initialize()
    store.close()
    foreign = {"AUTHMW_MASTER_KEY": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="}
    with pytest.raises(ConfigurationError, match="does not hold"):
        open_store(url, environ=foreign)
    (tmp_path / "authmw.key").unlink()
    with pytest.raises(ConfigurationError, match="sealed under a master key"):
        open_store(url, create=True, environ=env)
    assert not (tmp_path / "authmw.key").exists()


def test_revoked_tokens_are_kept_until_they_expire(store: Store) -> None:
    user = store.create_user("tina")
    now = int(time.time())
    store.revoke_token("a" * 32, user.id, now + 3600)
    store.revoke_token("a" * 32, user.id, now + 3600)  # twice is fine
    store.revoke_token("b" * 32, user.id, now - 1)  # already expired: purged by the next revocation
    assert store.token_revoked("a" * 32) and store.token_revoked("b" * 32)
    store.revoke_token("c" * 32, user.id, now + 60)
    assert store.token_revoked("a" * 32) and not store.token_revoked("b" * 32)
    assert not store.token_revoked("d" * 32)


def test_a_rotated_signing_key_keeps_verifying_until_its_tokens_expire(store_url: str, keyring: Keyring) -> None:
    now = [1_800_000_000.0]
    store = Store(open_database(store_url, create=True), keyring, clock=lambda: now[0])
    store.initialize()
    try:
        old_kid, _old = store.signing_key()
        new_kid, retired = store.rotate_signing_key()
        assert retired == [old_kid] and store.signing_key()[0] == new_kid != old_kid
        assert set(store.public_token_keys(["EdDSA"])) == {old_kid, new_kid}
        now[0] += 7 * 24 * 3600 + 3601  # past the longest token life: the old key is no longer listed
        assert set(store.public_token_keys(["EdDSA"])) == {new_kid}
    finally:
        store.close()
