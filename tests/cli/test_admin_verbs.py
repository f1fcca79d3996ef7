"""The administrator's list, show, update and delete verbs (issue 14), on SQLite and PostgreSQL: each verb's
answer in JSON and as a table, a precise exit-2 message for what does not exist, deletes that leave nothing
dangling and reach a running guard within a second, key pairs written 0600, public keys read without the master
key, and the access keys' last use recorded without a revision bump."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from authmw.cli import main
from authmw.errors import AuthmwError
from authmw.store import open_store
from authmw.store.schema import SCHEMA_VERSION
from tests.support.pgutil import pg_schema
from tests.support.signed import URL

POLICY = {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["modelarts:notebook:*"]}]}
NARROWER = {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["modelarts:notebook:list"]}]}
PASSWORD = "alice-password-7Q!"


# What these proxies prove is when a change reaches them; the store's 50 ms read deadline is not their subject (on
# a loaded machine a read missed it: 503 store_unavailable), so it has room here.
PROXY_CONFIG = "unmatched: deny\nstore_timeout: 2000\n"


class Cli:
    """``authmw`` in-process against one store; stderr captured to check the one-line messages."""

    def __init__(self, url: str, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
        self.url, self.home, self.capsys = url, home, capsys
        monkeypatch.setenv("AUTHMW_STORE", url)
        monkeypatch.setenv("AUTHMW_MASTER_KEY_FILE", str(home / "authmw.key"))
        monkeypatch.delenv("AUTHMW_MASTER_KEY", raising=False)
        monkeypatch.delenv("AUTHMW_DOMAIN", raising=False)

    def run(self, *argv: str, stdin: str = "", expect: int = 0) -> str:
        out = io.StringIO()
        self.capsys.readouterr()
        code = main(list(argv), stdin=io.StringIO(stdin), stdout=out)
        assert code == expect, (argv, code, out.getvalue(), self.capsys.readouterr().err)
        return out.getvalue()

    def json(self, *argv: str, stdin: str = "") -> object:
        return json.loads(self.run(*argv, "--format", "json", stdin=stdin))

    def refused(self, *argv: str, code: int = 2) -> str:
        """The one stderr line of a command that must fail with ``code``."""
        self.run(*argv, expect=code)
        err = self.capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        return err

    def file(self, name: str, document: object) -> str:
        path = self.home / name
        path.write_text(json.dumps(document))
        return str(path)


@pytest.fixture(params=["sqlite", "postgresql"])
def cli(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Cli]:
    if request.param == "sqlite":
        yield Cli(f"sqlite:///{tmp_path / 'authmw.db'}", tmp_path, monkeypatch, capsys)
    else:
        with pg_schema() as url:
            yield Cli(url, tmp_path, monkeypatch, capsys)


def populate(cli: Cli) -> dict[str, str]:
    """One of everything, in ``default`` and in ``acme``; returns the access keys by user."""
    cli.run("init")
    cli.run("domain", "create", "acme")
    cli.run("project", "create", "cn-north-4")
    cli.run("user", "create", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    for user in ("bob", "root"):
        cli.run("user", "create", user)
    cli.run("user", "create", "carol", "--domain", "acme")
    cli.run("group", "create", "developers")
    cli.run("group", "add-user", "developers", "alice")
    cli.run("group", "add-user", "developers", "bob")
    cli.run("policy", "create", "notebooks", "--file", cli.file("policy.json", POLICY))
    cli.run("policy", "attach", "notebooks", "--group", "developers")
    cli.run("policy", "attach", "notebooks", "--user", "alice")
    cli.run("agency", "create", "ma_agency", "--trust", "op_svc_modelarts", "--policy", "notebooks")
    cli.run(
        "workspace", "create", "team-a", "--auth-type", "INTERNAL", "--grant", "alice", "--grant-group", "developers"
    )
    cli.run("workspace", "create", "team-b", "--auth-type", "PRIVATE", "--owner", "root")
    cli.run("keypair", "create", "laptop", "--user", "alice", "--format", "json")
    cli.run("whitelist", "set", "--user", "alice", "192.0.2.7")
    cli.run("whitelist", "set", "--workspace", "team-a", "10.0.0.0/8")
    keys = {user: cli.json("key", "create", user)["access"] for user in ("alice", "bob")}  # type: ignore[index]
    keys["carol"] = cli.json("key", "create", "carol", "--domain", "acme")["access"]  # type: ignore[index]
    return keys


def _table(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def test_list_and_show_every_entity_as_json_and_table(cli: Cli) -> None:
    keys = populate(cli)
    assert [d["name"] for d in cli.json("domain", "list")] == ["acme", "default"]  # type: ignore[union-attr, index]
    acme = cli.json("domain", "show", "acme")
    assert acme["users"] == 1 and acme["projects"] == 0  # type: ignore[index]
    assert [p["name"] for p in cli.json("project", "list")] == ["cn-north-4"]  # type: ignore[union-attr, index]
    assert cli.json("project", "show", "cn-north-4")["region"] == "cn-north-4"  # type: ignore[index]
    alice = cli.json("user", "show", "alice")
    assert alice["groups"] == ["developers"] and alice["policies"] == ["notebooks"]  # type: ignore[index]
    assert alice["access_keys"] == [keys["alice"]] and alice["keypairs"] == ["laptop"]  # type: ignore[index]
    assert alice["password_set"] is True and alice["enabled"] is True  # type: ignore[index]
    assert alice["created_at"].endswith("Z")  # type: ignore[index, union-attr]
    assert cli.json("group", "show", "developers")["users"] == ["alice", "bob"]  # type: ignore[index]
    assert [g["name"] for g in cli.json("group", "list")] == ["developers"]  # type: ignore[union-attr, index]
    policies = cli.json("policy", "list")
    assert policies[0]["name"] == "notebooks" and policies[0]["system"] is False  # type: ignore[index]
    assert any(p["system"] for p in policies)  # type: ignore[union-attr, index]
    shown = cli.json("policy", "show", "notebooks")
    assert shown["document"] == POLICY  # type: ignore[index]
    assert shown["attached_to"] == ["agency:ma_agency", "group:developers", "user:alice"]  # type: ignore[index]
    assert cli.json("agency", "show", "ma_agency")["policies"] == ["notebooks"]  # type: ignore[index]
    assert [a["name"] for a in cli.json("agency", "list")] == ["ma_agency"]  # type: ignore[union-attr, index]
    team_a = cli.json("workspace", "show", "team-a")
    assert team_a["grants"] == ["group:developers", "user:alice"]  # type: ignore[index]
    assert cli.json("workspace", "show", "team-b")["owner"] == "root"  # type: ignore[index]
    assert [w["name"] for w in cli.json("workspace", "list")] == ["default", "team-a", "team-b"]  # type: ignore[union-attr, index]
    assert [k["name"] for k in cli.json("keypair", "list", "--user", "alice")] == ["laptop"]  # type: ignore[union-attr, index]
    assert cli.json("keypair", "show", "laptop", "--user", "alice")["public_key"].startswith("ssh-ed25519 ")  # type: ignore[index, union-attr]
    assert cli.json("whitelist", "show", "--user", "alice")["entries"] == ["192.0.2.7"]  # type: ignore[index]
    key = cli.json("key", "show", keys["alice"])
    assert key["user"] == "alice" and key["last_used_at"] is None and "secret" not in key  # type: ignore[index, operator]
    assert [k["access"] for k in cli.json("key", "list", "alice")] == [keys["alice"]]  # type: ignore[union-attr, index]
    assert cli.json("key", "show", keys["carol"], "--domain", "acme")["user"] == "carol"  # type: ignore[index]

    # the same as tables: a header row, then one row per record; a show is field/value lines
    users = _table(cli.run("user", "list"))
    assert users[0] == ["ID", "NAME", "DOMAIN", "ENABLED"] and [row[1] for row in users[1:]] == [
        "carol",
        "alice",
        "bob",
        "root",
    ]
    for argv, first in (
        (["domain", "list"], ["ID", "NAME"]),
        (["project", "list"], ["ID", "NAME", "DOMAIN_ID", "REGION"]),
        (["group", "list"], ["ID", "NAME", "DOMAIN", "USERS", "POLICIES"]),
        (["agency", "list"], ["ID", "NAME", "DOMAIN_ID", "TRUST_DOMAIN", "MAX_DURATION", "POLICIES"]),
        (["workspace", "list"], ["ID", "NAME", "AUTH_TYPE", "DOMAIN_ID", "OWNER", "GRANTS", "CREATED_AT"]),
        (["keypair", "list", "--user", "alice"], ["NAME", "USER", "TYPE", "FINGERPRINT", "EXPIRES_AT"]),
        (["key", "list", "alice"], ["ACCESS", "USER", "STATUS", "CREATED_AT", "LAST_USED_AT"]),
        (["policy", "list"], ["ID", "NAME", "DOMAIN", "ATTACHED_TO", "SYSTEM"]),
    ):
        assert _table(cli.run(*argv))[0] == first, argv
    assert ["users", "1"] in _table(cli.run("domain", "show", "acme"))
    assert ["groups", "developers"] in _table(cli.run("user", "show", "alice"))
    assert ["grants", "group:developers,user:alice"] in _table(cli.run("workspace", "show", "team-a"))
    assert ["last_used_at", "-"] in _table(cli.run("key", "show", keys["alice"]))
    text = cli.run("policy", "show", "notebooks")
    assert ["name", "notebooks"] in _table(text) and json.loads(text[text.index("{") :]) == POLICY
    assert cli.run("whitelist", "show", "--workspace", "team-a") == "workspace team-a: 10.0.0.0/8\n"
    assert _table(cli.run("project", "list", "--domain", "acme")) == [["(none)"]]


def test_what_does_not_exist_is_exit_2_with_a_precise_message(cli: Cli) -> None:
    keys = populate(cli)
    for argv, message in (
        (["domain", "show", "nope"], "no domain 'nope'"),
        (["domain", "delete", "nope"], "no domain 'nope'"),
        (["project", "show", "nope"], "no project 'nope' in domain 'default'"),
        (["project", "list", "--domain", "nope"], "no domain 'nope'"),
        (["project", "delete", "nope"], "no project 'nope' in domain 'default'"),
        (["user", "show", "carol"], "no user 'carol' in domain 'default'"),
        (["user", "update", "nope", "--disable"], "no user 'nope' in domain 'default'"),
        (["user", "delete", "nope"], "no user 'nope' in domain 'default'"),
        (["group", "show", "nope"], "no group 'nope' in domain 'default'"),
        (["group", "remove-user", "developers", "root"], "user 'root' is not in group 'developers'"),
        (["group", "remove-user", "developers", "nope"], "no user 'nope' in domain 'default'"),
        (["group", "delete", "nope"], "no group 'nope' in domain 'default'"),
        (["policy", "show", "nope"], "no policy 'nope' in this domain or among the system policies"),
        (["policy", "update", "nope", "--file", cli.file("p.json", POLICY)], "no policy 'nope'"),
        (["policy", "detach", "notebooks", "--user", "bob"], "policy 'notebooks' is not attached to user 'bob'"),
        (["policy", "detach", "notebooks", "--agency", "nope"], "no agency 'nope' in domain 'default'"),
        (["policy", "delete", "nope"], "no policy 'nope'"),
        (["agency", "show", "nope"], "no agency 'nope' in domain 'default'"),
        (["agency", "update", "nope", "--trust", "acme"], "no agency 'nope' in domain 'default'"),
        (["agency", "delete", "nope"], "no agency 'nope' in domain 'default'"),
        (["workspace", "show", "nope"], "no workspace 'nope' in domain 'default'"),
        (["workspace", "grant", "nope", "--user", "bob"], "no workspace 'nope' in domain 'default'"),
        (["workspace", "revoke", "team-a", "--user", "bob"], "user 'bob' has no grant on workspace 'team-a'"),
        (["workspace", "update", "nope", "--auth-type", "PUBLIC"], "no workspace 'nope' in domain 'default'"),
        (["workspace", "delete", "nope"], "no workspace 'nope' in domain 'default'"),
        (["keypair", "list", "--user", "nope"], "no user 'nope' in domain 'default'"),
        (["keypair", "show", "nope", "--user", "alice"], "user 'alice' has no key pair 'nope'"),
        (["keypair", "delete", "nope", "--user", "alice"], "user 'alice' has no key pair 'nope'"),
        (["whitelist", "show", "--workspace", "nope"], "no workspace 'nope' in domain 'default'"),
        (["whitelist", "clear", "--user", "nope"], "no user 'nope' in domain 'default'"),
        (["key", "show", "AKIDNOSUCHKEY"], "no access key 'AKIDNOSUCHKEY'"),
        (["key", "list", "nope"], "no user 'nope' in domain 'default'"),
        (["key", "show", keys["carol"]], None),  # any domain by default: found
        (["key", "show", keys["alice"], "--domain", "acme"], f"no access key '{keys['alice']}' in domain 'acme'"),
        (["key", "delete", keys["alice"], "--domain", "acme"], f"no access key '{keys['alice']}' in domain 'acme'"),
        (["key", "disable", keys["alice"], "--domain", "acme"], f"no access key '{keys['alice']}' in domain 'acme'"),
    ):
        if message is None:
            cli.run(*argv)
            continue
        assert message in cli.refused(*argv), argv
    # and what was refused changed nothing
    assert cli.json("key", "show", keys["alice"])["status"] == "active"  # type: ignore[index]


def test_refused_changes(cli: Cli) -> None:
    populate(cli)
    for argv, message in (
        (["domain", "delete", "default"], "cannot be deleted"),
        (["domain", "delete", "acme"], "still holds 1 users"),
        (["user", "delete", "root"], "owns workspace 'team-b'"),
        (["user", "update", "alice"], "nothing to change"),
        (["user", "update", "alice", "--enable", "--disable"], "not allowed with argument"),
        (["policy", "delete", "notebooks"], "attached to 3 principal(s)"),
        (["policy", "delete", "ModelArts FullAccess"], "is a system policy"),
        (["policy", "update", "ModelArts FullAccess", "--file", cli.file("p.json", POLICY)], "system policy"),
        (["policy", "update", "notebooks", "--file", cli.file("bad.json", {"Version": "1.1"})], "invalid policy"),
        (["policy", "detach", "notebooks"], "one of the arguments --group --user --agency is required"),
        (["agency", "update", "ma_agency"], "nothing to change"),
        (["agency", "update", "ma_agency", "--max-duration", "5"], "--max-duration must be"),
        (["workspace", "update", "team-a", "--auth-type", "PUBLIC"], "revoke them before leaving INTERNAL"),
        (["workspace", "grant", "team-b", "--user", "bob"], "INTERNAL workspaces only"),
        (["workspace", "grant", "team-a", "--user", "alice"], "already has a grant"),
        (["workspace", "grant", "team-a"], "at least one --user or --group"),
        (["workspace", "delete", "0"], "default workspace '0' cannot be changed"),
        (["workspace", "update", "team-a", "--owner", "root", "--no-owner"], "not allowed with argument"),
    ):
        assert message in cli.refused(*argv), argv
    assert len(cli.json("policy", "show", "notebooks")["attached_to"]) == 3  # type: ignore[index, arg-type]


def test_updates(cli: Cli) -> None:
    keys = populate(cli)
    assert cli.json("user", "update", "alice", "--disable")["enabled"] is False  # type: ignore[index]
    assert cli.json("user", "update", "alice", "--enable")["enabled"] is True  # type: ignore[index]
    before = cli.json("user", "show", "bob")
    assert before["password_set"] is False  # type: ignore[index]
    after = cli.json("user", "update", "bob", "--password-stdin", stdin="bob-password-9Z?\n")
    assert after["password_set"] is True and after["password_changed_at"]  # type: ignore[index]
    assert "no password on standard input" in cli.refused("user", "update", "bob", "--password-stdin")
    cli.run("policy", "update", "notebooks", "--file", cli.file("narrow.json", NARROWER))
    assert cli.json("policy", "show", "notebooks")["document"] == NARROWER  # type: ignore[index]
    cli.run("explain", "--user", "alice", "--action", "modelarts:notebook:create", expect=1)  # the new document
    agency = cli.json("agency", "update", "ma_agency", "--trust", "acme", "--max-duration", "3600")
    assert agency["trust_domain"] == "acme" and agency["max_duration"] == 3600  # type: ignore[index]
    workspace = cli.json("workspace", "grant", "team-a", "--user", "bob")
    assert workspace["grants"] == ["group:developers", "user:alice", "user:bob"]  # type: ignore[index]
    workspace = cli.json("workspace", "revoke", "team-a", "--user", "alice", "--user", "bob", "--group", "developers")
    assert workspace["grants"] == []  # type: ignore[index]
    workspace = cli.json("workspace", "update", "team-a", "--auth-type", "private", "--owner", "bob")
    assert workspace["auth_type"] == "PRIVATE" and workspace["owner"] == "bob"  # type: ignore[index]
    assert cli.json("workspace", "update", "team-a", "--no-owner")["owner"] is None  # type: ignore[index]
    cli.run("group", "remove-user", "developers", "bob")
    assert cli.json("group", "show", "developers")["users"] == ["alice"]  # type: ignore[index]
    cli.run("policy", "detach", "notebooks", "--user", "alice")
    assert cli.json("user", "show", "alice")["policies"] == []  # type: ignore[index]
    assert cli.json("whitelist", "clear", "--user", "alice")["entries"] == []  # type: ignore[index]
    assert cli.run("whitelist", "show", "--user", "alice") == "user alice: all addresses allowed\n"
    assert cli.json("key", "disable", keys["carol"], "--domain", "acme")["status"] == "inactive"  # type: ignore[index]
    cli.run("user", "delete", "carol", "--domain", "acme")
    assert "trusted by agency 'ma_agency' of 'default'" in cli.refused("domain", "delete", "acme")


def _rows_naming(cli: Cli, value: str) -> list[str]:
    """Every (table, column) of the store that still holds ``value``."""
    store = open_store(cli.url)
    found = []
    try:
        with store.db.read() as tx:
            for table, columns in (
                ("access_keys", ("access_key", "user_id")),
                ("keypairs", ("user_id",)),
                ("group_members", ("group_id", "user_id")),
                ("attachments", ("policy_id", "principal_id")),
                ("workspace_grants", ("workspace_id", "principal_id")),
                ("whitelists", ("scope_id",)),
                ("workspaces", ("id", "owner_id")),
                ("revoked_tokens", ("user_id",)),
                ("users", ("id",)),
                ("groups_", ("id",)),
                ("policies", ("id",)),
                ("agencies", ("id",)),
                ("projects", ("id",)),
                ("domains", ("id",)),
            ):
                for column in columns:
                    if tx.one(f"SELECT 1 FROM {table} WHERE {column} = ?", (value,)):
                        found.append(f"{table}.{column}")
    finally:
        store.close()
    return found


def test_deletes_leave_nothing_dangling(cli: Cli) -> None:
    keys = populate(cli)
    ids = {
        "alice": cli.json("user", "show", "alice")["id"],  # type: ignore[index]
        "developers": cli.json("group", "show", "developers")["id"],  # type: ignore[index]
        "notebooks": cli.json("policy", "show", "notebooks")["id"],  # type: ignore[index]
        "ma_agency": cli.json("agency", "show", "ma_agency")["id"],  # type: ignore[index]
        "team-a": cli.json("workspace", "show", "team-a")["id"],  # type: ignore[index]
        "cn-north-4": cli.json("project", "show", "cn-north-4")["id"],  # type: ignore[index]
    }
    assert _rows_naming(cli, ids["alice"])  # the check can see what it looks for
    deleted = cli.json("user", "delete", "alice")
    assert deleted == {"id": ids["alice"], "name": "alice", "domain": "default", "status": "deleted"}
    assert _rows_naming(cli, ids["alice"]) == []
    assert _rows_naming(cli, keys["alice"]) == []
    for argv, name in (
        (["group", "delete", "developers"], "developers"),
        (["agency", "delete", "ma_agency"], "ma_agency"),
        (["workspace", "delete", "team-a"], "team-a"),
        (["project", "delete", "cn-north-4"], "cn-north-4"),
    ):
        assert cli.json(*argv)["status"] == "deleted"  # type: ignore[index]
        assert _rows_naming(cli, ids[name]) == [], argv
        assert cli.refused(*argv)  # gone: a second delete is exit 2
    cli.run("user", "create", "dave")
    cli.run("policy", "attach", "notebooks", "--user", "dave")
    assert "attached to 1 principal(s)" in cli.refused("policy", "delete", "notebooks")
    cli.run("policy", "delete", "notebooks", "--force")
    assert _rows_naming(cli, ids["notebooks"]) == []
    cli.run("keypair", "create", "spare", "--user", "bob", "--out", str(cli.home / "spare"))
    cli.run("keypair", "delete", "spare", "--user", "bob")
    assert cli.json("keypair", "list", "--user", "bob") == []
    # a domain goes once it is empty
    acme = cli.json("domain", "show", "acme")["id"]  # type: ignore[index]
    assert "still holds 1 users" in cli.refused("domain", "delete", "acme")
    assert cli.json("key", "delete", keys["carol"], "--domain", "acme")["status"] == "deleted"  # type: ignore[index]
    assert cli.json("key", "list", "carol", "--domain", "acme") == []
    cli.run("user", "delete", "carol", "--domain", "acme")
    assert cli.json("domain", "delete", "acme") == {"id": acme, "name": "acme", "status": "deleted"}
    assert _rows_naming(cli, acme) == []
    # and the store still exports and reads whole
    cli.run("export")


def test_domain_from_environment(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = populate(cli)
    monkeypatch.setenv("AUTHMW_DOMAIN", "acme")
    assert [u["name"] for u in cli.json("user", "list")] == ["carol"]  # type: ignore[union-attr, index]
    assert cli.json("user", "show", "carol")["domain"] == "acme"  # type: ignore[index]
    assert "no user 'alice' in domain 'acme'" in cli.refused("user", "show", "alice")
    assert "in domain 'acme'" in cli.refused("key", "show", keys["alice"])
    assert cli.json("user", "show", "alice", "--domain", "default")["name"] == "alice"  # type: ignore[index]
    assert "env AUTHMW_DOMAIN; default: acme" in _help("user", "show")


def test_keypair_out_is_0600_and_never_overwrites(cli: Cli) -> None:
    populate(cli)
    out = cli.home / "id_ed25519"
    report = cli.json("keypair", "create", "work", "--user", "bob", "--out", str(out))
    assert "private_key" not in report and report["out"] == str(out)  # type: ignore[operator, index]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert cli.run("keypair", "create", "work2", "--user", "bob", "--out", str(cli.home / "k2")).startswith("name")
    before = out.read_bytes()
    assert "exists; refusing to overwrite" in cli.refused(
        "keypair", "create", "again", "--user", "bob", "--out", str(out)
    )
    assert out.read_bytes() == before
    # the refused file left no key pair behind whose private key nobody has
    assert [k["name"] for k in cli.json("keypair", "list", "--user", "bob")] == ["work", "work2"]  # type: ignore[union-attr, index]
    link = cli.home / "link"
    link.symlink_to(cli.home / "elsewhere")
    assert "exists; refusing" in cli.refused("keypair", "create", "viasymlink", "--user", "bob", "--out", str(link))
    assert not (cli.home / "elsewhere").exists()
    # a store refusal (a name taken) leaves no file behind either
    assert "already has a key pair" in cli.refused(
        "keypair", "create", "work", "--user", "bob", "--out", str(cli.home / "k3")
    )
    assert not (cli.home / "k3").exists()
    assert "--out FILE" in _help("keypair", "create") and "0600" in _help("keypair", "create")


def _help(*argv: str) -> str:
    out = io.StringIO()
    saved, sys.stdout = sys.stdout, out
    try:
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
    finally:
        sys.stdout = saved
    return " ".join(out.getvalue().split())


def test_public_keys_are_read_without_the_master_key(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(cli)
    os.unlink(cli.home / "authmw.key")
    monkeypatch.setenv("AUTHMW_MASTER_KEY_FILE", str(cli.home / "absent.key"))
    assert cli.run("keypair", "authorized-keys", "--user", "alice").endswith(" authmw:alice/laptop\n")
    assert [k["name"] for k in cli.json("keypair", "list", "--user", "alice")] == ["laptop"]  # type: ignore[union-attr, index]
    cli.run("keypair", "show", "laptop", "--user", "alice")
    # what needs a secret still needs the key
    assert "cannot read master key file" in cli.refused("key", "create", "bob")


def test_a_deleted_user_is_refused_by_a_running_guard_within_a_second(cli: Cli) -> None:
    from authmw import open_guard
    from authmw.models import Request
    from authmw.signing import sign_request

    cli.run("init")
    cli.run("user", "create", "alice")
    cli.run("user", "create", "root")
    alice = cli.json("key", "create", "alice")
    keys, alice_secret = {"alice": alice["access"]}, alice["secret"]  # type: ignore[index]
    secret = cli.json("key", "create", "root")
    guard = open_guard(cli.url)  # a guard of its own over the same store, as a running process has

    sent = iter(range(1_000_000))

    def request(access: str, secret_key: str) -> Request:  # each one new: never refused as a replay
        url = f"{URL}&n={next(sent)}"
        signed = sign_request("GET", url, access_key=access, secret_key=secret_key, at=time.time())
        split = urlsplit(signed.url)
        return Request.build(signed.method, f"{split.path}?{split.query}", signed.headers, signed.body)

    root = (secret["access"], secret["secret"])  # type: ignore[index]
    assert guard.authenticate(request(*root))[1].user_name == "root"
    time.sleep(0.3)  # the guard has polled the revision since the last change: only the delete can move it
    assert guard.authenticate(request(*root))[1].user_name == "root"  # and root is cached
    cli.run("user", "delete", "root")
    refusal = _refusal_within(1.0, lambda: guard.authenticate(request(*root)))
    assert (refusal.status, refusal.code) == (401, "signature_mismatch"), refusal  # unknown keys look like bad ones
    assert guard.authenticate(request(keys["alice"], alice_secret))[1].user_name == "alice"  # others unaffected
    guard.identity.store.close()  # type: ignore[attr-defined]


def _refusal_within(seconds: float, call: Callable[[], object]) -> AuthmwError:
    """The error ``call`` raises within ``seconds`` (it is called again until it does)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            call()
        except AuthmwError as exc:
            return exc
        assert time.monotonic() < deadline, f"still accepted after {seconds} s"
        time.sleep(0.05)


def test_last_use_is_recorded_coarsely_without_a_revision_bump(cli: Cli) -> None:
    from authmw.store import CachedIdentity

    keys = populate(cli)
    store = open_store(cli.url)
    try:
        now = [1_800_000_000.0]
        ticks = [0.0]
        identity = CachedIdentity(store, use_interval=60, timer=lambda: ticks[0], clock=lambda: now[0])
        identity.poll()
        revision = store.revision()
        identity.key_used(keys["alice"])
        ticks[0] = 30.0
        identity.poll()  # within the minute: nothing written
        assert cli.json("key", "show", keys["alice"])["last_used_at"] is None  # type: ignore[index]
        ticks[0] = 61.0
        identity.poll()  # a batch, on its own thread
        deadline = time.monotonic() + 5
        while cli.json("key", "show", keys["alice"])["last_used_at"] is None:  # type: ignore[index]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert cli.json("key", "show", keys["alice"])["last_used_at"] == "2027-01-15T08:00:00Z"  # type: ignore[index]
        assert store.revision() == revision  # no cache anywhere was dropped for it
        # an older time never replaces a newer one
        store.record_key_use({keys["alice"]: 1_700_000_000})
        assert cli.json("key", "list", "alice")[0]["last_used_at"] == "2027-01-15T08:00:00Z"  # type: ignore[index]
    finally:
        store.close()


def test_only_an_authenticated_request_counts_as_a_use(cli: Cli) -> None:
    from authmw import open_guard
    from authmw.models import Request
    from authmw.signing import sign_request

    cli.run("init")
    cli.run("user", "create", "alice")
    key = cli.json("key", "create", "alice")
    access, secret = key["access"], key["secret"]  # type: ignore[index]
    guard = open_guard(cli.url)
    identity = guard.identity

    def request(secret_key: str) -> Request:
        signed = sign_request("GET", URL, access_key=access, secret_key=secret_key, at=time.time())
        split = urlsplit(signed.url)
        return Request.build(signed.method, f"{split.path}?{split.query}", signed.headers, signed.body)

    try:
        with pytest.raises(AuthmwError):
            guard.authenticate(request("not-the-secret-" * 3))  # the key id is public: a bad signature is no use
        identity.flush_key_use()  # type: ignore[attr-defined]
        assert cli.json("key", "show", access)["last_used_at"] is None  # type: ignore[index]
        guard.authenticate(request(secret))
        identity.flush_key_use()  # type: ignore[attr-defined]
        assert cli.json("key", "show", access)["last_used_at"] is not None  # type: ignore[index]
    finally:
        identity.store.close()  # type: ignore[attr-defined]


def test_a_version_2_store_migrates_and_keeps_its_keys(cli: Cli) -> None:
    from authmw.store.database import open_database

    cli.run("init")
    cli.run("user", "create", "alice")
    access = cli.json("key", "create", "alice")["access"]  # type: ignore[index]
    db = open_database(cli.url)
    try:  # the store as version 2 left it: no last_used_at
        with db.write() as tx:
            tx.run("ALTER TABLE access_keys DROP COLUMN last_used_at")
            tx.run("DROP TABLE notebooks")  # and none of what later versions added
            tx.run("DROP TABLE project_attachments")
            tx.run("ALTER TABLE keypairs DROP COLUMN expires_at")
            tx.run("UPDATE authmw_meta SET value = 2 WHERE name = 'schema_version'")
    finally:
        db.close()
    assert "run `authmw migrate`" in cli.refused("key", "list", "alice")
    assert cli.json("migrate") == {"schema_from": 2, "schema_to": SCHEMA_VERSION}
    assert cli.json("key", "list", "alice") == [  # type: ignore[comparison-overlap]
        {
            "access": access,
            "user": "alice",
            "status": "active",
            "created_at": cli.json("key", "show", access)["created_at"],  # type: ignore[index]
            "last_used_at": None,
        }
    ]


def test_a_running_proxy_refuses_a_deleted_users_key_within_a_second(cli: Cli, tmp_path: Path) -> None:
    import types

    import httpx

    from authmw.signing import sign_request
    from tests.support.proxy import proxy_process

    cli.run("init")
    cli.run("project", "create", "cn-north-4")
    cli.run("user", "create", "alice")
    cli.run("user", "create", "bob")
    alice = cli.json("key", "create", "alice")
    bob = cli.json("key", "create", "bob")
    project = cli.json("project", "show", "cn-north-4")["id"]  # type: ignore[index]
    store = types.SimpleNamespace(url=cli.url, key_file=str(cli.home / "authmw.key"))

    def status(url: str, key: Any) -> int:
        nonce = {"X-Nonce": os.urandom(8).hex()}  # each request new: never a replay
        path = f"{url}/v1/{project}/notebooks"
        signed = sign_request("GET", path, nonce, b"", access_key=key["access"], secret_key=key["secret"])
        return httpx.get(signed.url, headers=signed.headers).status_code

    with proxy_process(store, tmp_path, PROXY_CONFIG) as (_process, url, _audit):  # type: ignore[arg-type]
        assert status(url, alice) == 403  # authenticated; no policy allows it
        cli.run("user", "delete", "alice")
        deadline = time.monotonic() + 1.0
        while status(url, alice) != 401:
            assert time.monotonic() < deadline, "the proxy still authenticates a deleted user's key after 1 s"
            time.sleep(0.05)
        assert status(url, bob) == 403
        used = cli.json("key", "show", bob["access"])  # type: ignore[index]
        assert used["last_used_at"] is None  # type: ignore[index]  # not yet: one batch a minute
    # the proxy wrote the uses it held as it shut down
    assert cli.json("key", "show", bob["access"])["last_used_at"] is not None  # type: ignore[index]


@pytest.mark.slow
def test_a_running_proxy_sees_every_delete_and_revocation_within_a_second(cli: Cli, tmp_path: Path) -> None:
    """Each verb that takes access away (or gives it back: a whitelist cleared) reaches a proxy process over the same
    store within a second of the command's return: keys, users, group memberships and groups, attachments and
    policies, workspace grants and workspaces, whitelists, agencies (their temporary credentials) and projects."""
    import types

    import httpx

    from authmw.signing import sign_request
    from tests.support.proxy import proxy_process

    cli.run("init")
    for project in ("cn-north-4", "cn-south-1"):
        cli.run("project", "create", project)
    projects = {name: cli.json("project", "show", name)["id"] for name in ("cn-north-4", "cn-south-1")}  # type: ignore[index]
    policy = cli.file("policy.json", POLICY)
    cli.run("policy", "create", "notebooks", "--file", policy)
    cli.run("policy", "create", "spare", "--file", policy)
    cli.run("group", "create", "developers")
    cli.run("group", "create", "interns")
    cli.run("policy", "attach", "notebooks", "--group", "developers")
    cli.run("policy", "attach", "notebooks", "--group", "interns")
    users = ("alice", "bob", "carol", "dave", "erin", "frank", "gina", "henry")
    for user in users:
        cli.run("user", "create", user)
    cli.run("group", "add-user", "developers", "alice")
    cli.run("group", "add-user", "interns", "gina")
    for user in ("bob", "carol", "dave", "erin", "frank"):
        cli.run("policy", "attach", "notebooks", "--user", user)
    cli.run("policy", "attach", "spare", "--user", "henry")
    for name in ("team-a", "team-b"):
        cli.run("workspace", "create", name, "--auth-type", "INTERNAL", "--grant", "carol")
    workspaces = {name: cli.json("workspace", "show", name)["id"] for name in ("team-a", "team-b")}  # type: ignore[index]
    cli.run("whitelist", "set", "--user", "dave", "192.0.2.1")  # the proxy's clients come from 127.0.0.1
    cli.run("domain", "create", "ops")
    cli.run("user", "create", "ivan", "--domain", "ops")
    cli.run("group", "create", "operators", "--domain", "ops")
    cli.run("group", "add-user", "operators", "ivan", "--domain", "ops")
    cli.run("policy", "attach", "Agent Operator", "--group", "operators", "--domain", "ops")
    cli.run("agency", "create", "helper", "--trust", "ops", "--policy", "notebooks")
    keys: dict[str, Any] = {user: cli.json("key", "create", user) for user in users}
    keys["ivan"] = cli.json("agency", "assume", "helper", "--user", "ivan", "--caller-domain", "ops")
    store = types.SimpleNamespace(url=cli.url, key_file=str(cli.home / "authmw.key"))

    def answer(url: str, who: str, workspace: str | None = None, project: str = "cn-north-4") -> tuple[int, str]:
        key = keys[who]
        headers = {"X-Nonce": os.urandom(8).hex()}  # each request new: never a replay
        if workspace is not None:
            headers["X-Workspace-Id"] = workspaces[workspace]
        signed = sign_request("GET", f"{url}/v1/{projects[project]}/notebooks", headers, b"",
                              access_key=key["access"], secret_key=key["secret"],
                              security_token=key.get("securitytoken"))  # fmt: skip
        response = httpx.get(signed.url, headers=signed.headers)
        return response.status_code, "ok" if response.is_success else response.json()["error_code"]

    with proxy_process(store, tmp_path, PROXY_CONFIG) as (_process, url, _audit):  # type: ignore[arg-type]
        for change, request, before, after in (
            (["key", "delete", keys["erin"]["access"]], ("erin",), "ok", "signature_mismatch"),
            (["user", "update", "frank", "--disable"], ("frank",), "ok", "signature_mismatch"),
            (["group", "remove-user", "developers", "alice"], ("alice",), "ok", "action_denied"),
            (["group", "delete", "interns"], ("gina",), "ok", "action_denied"),
            (["policy", "detach", "notebooks", "--user", "bob"], ("bob",), "ok", "action_denied"),
            (["policy", "delete", "spare", "--force"], ("henry",), "ok", "action_denied"),
            (["workspace", "revoke", "team-a", "--user", "carol"], ("carol", "team-a"), "ok", "workspace_denied"),
            (["workspace", "delete", "team-b"], ("carol", "team-b"), "ok", "workspace_not_found"),
            (["whitelist", "clear", "--user", "dave"], ("dave",), "address_not_allowed", "ok"),
            (["agency", "delete", "helper"], ("ivan",), "ok", "invalid_security_token"),
            (["project", "delete", "cn-south-1"], ("carol", None, "cn-south-1"), "ok", "project_not_found"),
        ):
            assert answer(url, *request)[1] == before, change
            cli.run(*change)
            deadline = time.monotonic() + 1.0
            while (seen := answer(url, *request))[1] != after:
                assert time.monotonic() < deadline, f"{change}: still {seen} after 1 s"
                time.sleep(0.05)
        assert answer(url, "carol") == (200, "ok")  # and the rest stands


def test_every_argument_says_what_it_is() -> None:
    """The CLI reference (docs/cli.md, generated from the parsers) has a meaning for every argument."""
    import argparse

    from authmw.cli import build_parser

    def leaves(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
        subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subcommands:
            yield parser
        for action in subcommands:
            for child in action.choices.values():
                yield from leaves(child)

    silent = [
        f"{parser.prog} {action.metavar or action.dest}"
        for parser in leaves(build_parser())
        # notebook and ssh: cli/ssh.py, the remote-access commands, documented in adapters/ssh/README.md
        if parser.prog.split()[1] not in ("notebook", "ssh")
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert silent == []


def test_a_policy_is_granted_and_revoked_on_one_project(cli: Cli) -> None:
    """``policy attach|detach --project``: the IAM API's project grants from the CLI, to a group or an agency."""
    populate(cli)
    cli.run("policy", "create", "spare", "--file", cli.file("narrow.json", NARROWER))
    granted = cli.json("policy", "attach", "spare", "--group", "developers", "--project", "cn-north-4")
    assert granted == {"policy": "spare", "group": "developers", "project": "cn-north-4"}
    cli.run("policy", "attach", "spare", "--agency", "ma_agency", "--project", "cn-north-4")
    shown = cli.json("policy", "show", "spare")["attached_to"]  # type: ignore[index]
    assert shown == ["agency:ma_agency@cn-north-4", "group:developers@cn-north-4"]  # grants in force show where
    store = open_store(cli.url)
    try:
        assert store.project_grants("cn-north-4", group="developers") == ("spare",)
        assert store.project_grants("cn-north-4", agency="ma_agency") == ("spare",)
        assert "a group or an agency" in cli.refused(
            "policy", "attach", "spare", "--user", "bob", "--project", "cn-north-4"
        )
        assert "no-such" in cli.refused("policy", "attach", "spare", "--group", "developers", "--project", "no-such")
        cli.run("policy", "detach", "spare", "--group", "developers", "--project", "cn-north-4")
        assert store.project_grants("cn-north-4", group="developers") == ()
        # Revoking a grant on a project leaves a domain-wide attachment alone, and the other way round.
        assert "not granted" in cli.refused(
            "policy", "detach", "notebooks", "--group", "developers", "--project", "cn-north-4"
        )
        cli.run("policy", "detach", "notebooks", "--group", "developers")
        assert store.project_grants("cn-north-4", agency="ma_agency") == ("spare",)
    finally:
        store.close()
