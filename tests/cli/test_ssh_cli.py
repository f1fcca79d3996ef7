"""``authmw notebook ...`` and ``authmw ssh authorized-keys`` (the AuthorizedKeysCommand) against real stores.

The gate's contract: one line for the notebook owner's key, nothing otherwise; an audit record per answer; bad
input exit 2, an unusable store or audit log exit 3, never a key printed when unsure; no master key needed,
nothing written to the store, and a cold process that imports only what the answer needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shlex
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from authmw.cli import build_parser, main
from authmw.contrib import openssh
from authmw.store import open_store
from tests.support.pgutil import pg_schema

SRC = Path(__file__).resolve().parents[2] / "src"


class Cli:
    def __init__(self, url: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.url, self.home = url, home
        self.audit = home / "audit.jsonl"
        monkeypatch.setenv("AUTHMW_STORE", url)
        monkeypatch.setenv("AUTHMW_MASTER_KEY_FILE", str(home / "authmw.key"))
        monkeypatch.delenv("AUTHMW_MASTER_KEY", raising=False)

    def run(self, *argv: str, expect: int = 0) -> str:
        out = io.StringIO()
        code = main(list(argv), stdin=io.StringIO(), stdout=out)
        assert code == expect, (argv, code, out.getvalue())
        return out.getvalue()

    def json(self, *argv: str) -> Any:
        return json.loads(self.run(*argv, "--format", "json"))

    def gate(self, *argv: str, key: str, login: str = "ma-user", notebook: str = "nb1", expect: int = 0) -> str:
        """One AuthorizedKeysCommand answer for ``key`` (``type base64``), as sshd runs it."""
        key_type, _, blob = key.partition(" ")
        return self.run(
            "ssh",
            "authorized-keys",
            "--notebook",
            notebook,
            "--store",
            self.url,
            "--audit-log",
            str(self.audit),
            *argv,
            login,
            key_type,
            blob.split(" ")[0],
            expect=expect,
        )

    def last_audit(self) -> dict[str, Any]:
        record: dict[str, Any] = json.loads(self.audit.read_text().splitlines()[-1])
        return record


@pytest.fixture(params=["sqlite", "postgresql"])
def cli(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    if request.param == "sqlite":
        yield Cli(f"sqlite:///{tmp_path / 'authmw.db'}", tmp_path, monkeypatch)
    else:
        with pg_schema() as url:
            yield Cli(url, tmp_path, monkeypatch)


@pytest.fixture
def sqlite_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    return Cli(f"sqlite:///{tmp_path / 'authmw.db'}", tmp_path, monkeypatch)


def setup_world(cli: Cli) -> dict[str, str]:
    """alice owns nb1 (key laptop), bob has a key of his own; returns the public keys."""
    cli.run("init")
    keys = {}
    for user, pair in (("alice", "laptop"), ("bob", "desk")):
        cli.run("user", "create", user)
        keys[user] = cli.json("keypair", "create", pair, "--user", user)["public_key"]
    created = cli.json("notebook", "create", "nb1", "--owner", "alice", "--keypair", "laptop")
    assert created["owner"] == "alice" and created["keypair"] == "laptop" and created["workspace"] == "0"
    assert created["login_user"] == "ma-user" and created["whitelist"] == []
    return keys


def test_the_owner_key_gets_its_line_and_everything_else_nothing(cli: Cli) -> None:
    keys = setup_world(cli)
    line = cli.gate(key=keys["alice"])
    assert line == f"restrict {keys['alice']} authmw:alice/laptop@nb1\n"
    record = cli.last_audit()
    fingerprint = cli.json("keypair", "create", "spare", "--user", "alice")["fingerprint"]
    assert record["outcome"] == "allow" and record["reason"] == "allowed" and record["user"] == "alice"
    assert record["notebook"] == "nb1" and record["login"] == "ma-user" and record["key_type"] == "ssh-ed25519"
    assert record["fingerprint"].startswith("SHA256:") and record["fingerprint"] != fingerprint
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", record["time"])  # RFC 3339 UTC, as every record

    assert cli.gate(key=keys["bob"], expect=1) == ""
    assert cli.last_audit()["reason"] == "key_not_of_notebook"
    assert cli.gate(key=keys["alice"], login="root", expect=1) == ""
    assert cli.last_audit()["reason"] == "wrong_login_account"
    assert cli.gate(key=keys["alice"], notebook="nb9", expect=1) == ""
    assert cli.last_audit()["reason"] == "no_notebook"

    cli.run("user", "disable", "alice")
    assert cli.gate(key=keys["alice"], expect=1) == ""
    assert cli.last_audit()["reason"] == "user_disabled"
    cli.run("user", "enable", "alice")
    assert cli.gate(key=keys["alice"]).startswith("restrict ")


def test_whitelists_make_from_and_refuse_other_sources(cli: Cli) -> None:
    keys = setup_world(cli)
    cli.run("notebook", "update", "nb1", "--whitelist", "127.0.0.1", "10.0.0.0/8")
    cli.run("whitelist", "set", "--user", "alice", "10.1.0.0/16", "127.0.0.0/8")
    line = cli.gate("--connection", "127.0.0.1 40000 127.0.0.1 22", key=keys["alice"])
    assert line.startswith('restrict,from="127.0.0.1/32,10.1.0.0/16" ssh-ed25519 ')
    assert cli.last_audit()["source"] == "127.0.0.1"
    assert cli.gate("--connection", "10.2.0.1 40000 10.0.0.1 22", key=keys["alice"], expect=1) == ""
    assert cli.last_audit()["reason"] == "source_not_whitelisted"
    cli.run("whitelist", "set", "--user", "alice", "192.0.2.0/24")
    assert cli.gate(key=keys["alice"], expect=1) == ""
    assert cli.last_audit()["reason"] == "whitelists_disjoint"
    cli.run("notebook", "update", "nb1", "--clear-whitelist")
    assert cli.gate(key=keys["alice"]).startswith('restrict,from="192.0.2.0/24" ')


def test_workspace_rules_apply(cli: Cli) -> None:
    keys = setup_world(cli)
    cli.run("group", "create", "team")
    cli.run("group", "add-user", "team", "alice")
    cli.run("workspace", "create", "team-ws", "--auth-type", "INTERNAL", "--grant-group", "team")
    cli.run("workspace", "create", "bobs-ws", "--auth-type", "PRIVATE", "--owner", "bob")
    cli.run("notebook", "update", "nb1", "--workspace", "team-ws")
    assert cli.gate(key=keys["alice"]).startswith("restrict ")
    # Nobody can be given a notebook in a workspace they may not enter...
    cli.run("notebook", "update", "nb1", "--workspace", "bobs-ws", expect=2)
    cli.run("notebook", "create", "nb2", "--owner", "alice", "--keypair", "laptop", "--workspace", "bobs-ws", expect=2)
    # ...and losing the access afterwards stops the next login: leaving the group, or the grant revoked.
    cli.run("group", "remove-user", "team", "alice")
    assert cli.gate(key=keys["alice"], expect=1) == ""
    assert cli.last_audit()["reason"] == "workspace_denied"
    cli.run("workspace", "grant", "team-ws", "--user", "alice")
    assert cli.gate(key=keys["alice"]).startswith("restrict ")
    cli.run("workspace", "revoke", "team-ws", "--user", "alice")
    assert cli.gate(key=keys["alice"], expect=1) == ""
    assert cli.last_audit()["reason"] == "workspace_denied"
    # A deleted workspace takes its notebooks' access with it (the notebook stays, without a workspace).
    cli.run("workspace", "delete", "team-ws")
    assert cli.json("notebook", "show", "nb1")["workspace"] is None
    assert cli.gate(key=keys["alice"], expect=1) == ""
    assert cli.last_audit()["reason"] == "no_workspace"


def test_deleting_the_key_pair_or_the_notebook_stops_logins(cli: Cli) -> None:
    keys = setup_world(cli)
    cli.run("keypair", "delete", "laptop", "--user", "alice")
    assert cli.json("notebook", "show", "nb1")["keypair"] is None
    assert cli.gate(key=keys["alice"], expect=1) == ""
    assert cli.last_audit()["reason"] == "no_keypair"
    cli.json("keypair", "import", "laptop2", "--user", "alice", "--public-key-file", _file(cli, keys["alice"]))
    cli.run("notebook", "update", "nb1", "--keypair", "laptop2")
    assert cli.gate(key=keys["alice"]).startswith("restrict ")
    cli.run("notebook", "delete", "nb1")
    assert cli.gate(key=keys["alice"], expect=1) == ""
    assert cli.last_audit()["reason"] == "no_notebook"


def test_deleting_the_owner_or_the_domain(cli: Cli) -> None:
    keys = setup_world(cli)
    cli.run("domain", "create", "acme")
    cli.run("user", "create", "carol", "--domain", "acme")
    cli.run("keypair", "import", "laptop", "--user", "carol", "--domain", "acme", "--public-key-file",
            _file(cli, keys["bob"]))  # fmt: skip
    cli.run("notebook", "create", "nb1", "--owner", "carol", "--keypair", "laptop", "--domain", "acme")
    assert cli.gate("--domain", "acme", key=keys["bob"]).startswith("restrict ")
    assert cli.gate(key=keys["bob"], expect=1) == ""  # the default domain's nb1 is alice's
    cli.run("user", "delete", "carol", "--domain", "acme")
    shown = cli.json("notebook", "show", "nb1", "--domain", "acme")
    assert shown["owner"] is None and shown["keypair"] is None
    assert cli.gate("--domain", "acme", key=keys["bob"], expect=1) == ""
    assert cli.last_audit()["reason"] == "no_owner"
    cli.run("domain", "delete", "acme", expect=2)  # a notebook is still there
    assert cli.json("domain", "show", "acme")["notebooks"] == 1
    cli.run("notebook", "delete", "nb1", "--domain", "acme")
    cli.run("domain", "delete", "acme")
    assert cli.gate(key=keys["alice"]).startswith("restrict ")


def test_key_expiry(cli: Cli) -> None:
    keys = setup_world(cli)
    cli.run("keypair", "create", "old", "--user", "alice", "--expires", "2020-01-01", expect=2)
    cli.run("keypair", "create", "bad", "--user", "alice", "--expires", "next week", expect=2)
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    pair = cli.json(
        "keypair",
        "import",
        "expiring",
        "--user",
        "alice",
        "--public-key-file",
        _file(cli, keys["alice"]),
        "--expires",
        soon,
    )
    assert abs(pair["expires_at"] - (time.time() + 3600)) < 5
    cli.run("notebook", "update", "nb1", "--keypair", "expiring")
    line = cli.gate(key=keys["alice"])
    stamp = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(pair["expires_at"]))
    assert line.startswith(f'restrict,expiry-time="{stamp}" ssh-ed25519 ')
    store = open_store(cli.url)
    try:
        with store.db.write() as tx:  # time passes
            tx.run("UPDATE keypairs SET expires_at = ? WHERE name = 'expiring'", (int(time.time()) - 1,))
    finally:
        store.close()
    assert cli.gate(key=keys["alice"], expect=1) == ""
    assert cli.last_audit()["reason"] == "key_expired"
    assert "expiring" not in cli.run("keypair", "authorized-keys", "--user", "alice")


def _file(cli: Cli, text: str) -> str:
    path = cli.home / f"key-{hashlib.sha256(text.encode()).hexdigest()[:8]}.pub"
    path.write_text(text + "\n")
    return str(path)


def test_notebook_verbs(cli: Cli) -> None:
    setup_world(cli)
    cli.run("notebook", "create", "nb1", "--owner", "alice", "--keypair", "laptop", expect=2)  # exists
    cli.run("notebook", "create", "nb2", "--owner", "alice", "--keypair", "desk", expect=2)  # bob's key pair
    cli.run("notebook", "create", "nb2", "--owner", "carol", "--keypair", "laptop", expect=2)
    cli.run("notebook", "create", "nb2", "--owner", "alice", "--keypair", "laptop", "--login-user", "Root!", expect=2)
    cli.run(
        "notebook", "create", "nb2", "--owner", "alice", "--keypair", "laptop", "--whitelist", "10.0.0.1/8", expect=2
    )
    many = [f"10.0.0.{i}" for i in range(6)]
    cli.run("notebook", "create", "nb2", "--owner", "alice", "--keypair", "laptop", "--whitelist", *many, expect=2)
    cli.run("notebook", "create", "nb 2", "--owner", "alice", "--keypair", "laptop", expect=2)
    made = cli.json(
        "notebook", "create", "nb2", "--owner", "bob", "--keypair", "desk", "--login-user", "root",
        "--whitelist", "192.0.2.7", "2001:db8::/32",
    )  # fmt: skip
    assert made["whitelist"] == ["192.0.2.7", "2001:db8::/32"] and made["login_user"] == "root"
    assert [n["name"] for n in cli.json("notebook", "list")] == ["nb1", "nb2"]
    assert [n["name"] for n in cli.json("notebook", "list", "--owner", "bob")] == ["nb2"]
    assert cli.json("notebook", "show", "nb2")["owner"] == "bob"
    cli.run("notebook", "update", "nb2", "--owner", "alice", expect=2)  # a new owner needs their key pair
    cli.run("notebook", "update", "nb2", "--whitelist", "10.0.0.0/8", "--clear-whitelist", expect=2)
    moved = cli.json("notebook", "update", "nb2", "--owner", "alice", "--keypair", "laptop", "--login-user", "ma-user")
    assert (moved["owner"], moved["keypair"], moved["login_user"]) == ("alice", "laptop", "ma-user")
    cli.run("notebook", "show", "nb9", expect=2)
    cli.run("notebook", "update", "nb9", "--login-user", "x", expect=2)
    cli.run("notebook", "delete", "nb9", expect=2)
    assert "nb2 deleted" in cli.run("notebook", "delete", "nb2")
    assert [n["name"] for n in cli.json("notebook", "list")] == ["nb1"]


def test_bad_input_is_refused_with_exit_2_and_recorded(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    keys = setup_world(cli)
    key_type, blob = keys["alice"].split(" ")[:2]
    for argv in (
        ["ma-user", key_type, blob[:-2]],  # malformed %k
        ["ma-user", "ssh-dss", blob],  # unknown %t
        ["ma-user", "ssh-rsa", blob],  # %t and %k disagree
        ["--connection", "nonsense", "ma-user", key_type, blob],
        ["--key-option", 'command="/bin/sh"', "ma-user", key_type, blob],
    ):
        out = cli.run("ssh", "authorized-keys", "--notebook", "nb1", "--audit-log", str(cli.audit), *argv, expect=2)
        assert out == ""
        assert cli.last_audit()["reason"] == "malformed_input"
    cli.run("ssh", "authorized-keys", "--notebook", "nb1", "ma-user", key_type, expect=2)  # a missing argument
    cli.run("ssh", "authorized-keys", "ma-user", key_type, blob, expect=2)  # no --notebook


def test_an_unknown_login_account_is_refused_and_recorded_as_given(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    keys = setup_world(cli)
    for login in ("nosuchuser", "ma-user\nrestrict ssh-ed25519 AAAA", "x" * 300, ""):
        assert cli.gate(key=keys["alice"], login=login, expect=1) == ""
        record = cli.last_audit()  # one JSON line whatever the account name holds
        assert (record["login"], record["reason"], record["outcome"]) == (login, "wrong_login_account", "deny")


def test_an_unusable_store_or_audit_log_refuses_with_exit_3(sqlite_cli: Cli, tmp_path: Path) -> None:
    cli = sqlite_cli
    keys = setup_world(cli)
    key_type, blob = keys["alice"].split(" ")[:2]
    not_a_store = tmp_path / "garbage.db"
    not_a_store.write_bytes(b"not a database" * 100)
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    for url in (f"sqlite:///{tmp_path / 'missing.db'}", f"sqlite:///{not_a_store}", f"sqlite:///{empty}", "redis://x"):
        argv = ["ssh", "authorized-keys", "--notebook", "nb1", "--store", url, "--audit-log", str(cli.audit)]
        assert cli.run(*argv, "ma-user", key_type, blob, expect=3) == ""
        assert cli.last_audit()["reason"] == "store_unavailable"
    assert not (tmp_path / "missing.db").exists()  # read-only: nothing created
    unwritable = tmp_path / "no-such-dir" / "audit.jsonl"
    argv = ["ssh", "authorized-keys", "--notebook", "nb1", "--store", cli.url, "--audit-log", str(unwritable)]
    assert cli.run(*argv, "ma-user", key_type, blob, expect=3) == ""  # no record, no login


def test_an_unreachable_or_foreign_postgresql_store_refuses_with_exit_3(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    keys = setup_world(cli)
    key_type, blob = keys["alice"].split(" ")[:2]
    for url in (
        "postgresql://gate:s3cret@127.0.0.1:1/authmw",  # nothing listens
        "postgresql://postgres:s3cret@127.0.0.1:5432/no_such_database",
        "postgresql://postgres:s3cret@127.0.0.1:5432/test?options=-csearch_path%3Dno_such_schema",  # no store there
    ):
        argv = ["ssh", "authorized-keys", "--notebook", "nb1", "--store", url, "--audit-log", str(cli.audit)]
        assert cli.run(*argv, "ma-user", key_type, blob, expect=3) == ""
        record = cli.last_audit()
        assert (record["reason"], record["outcome"]) == ("store_unavailable", "deny"), record
    assert "s3cret" not in cli.audit.read_text()  # the record names the store, never its password


def test_an_internal_error_refuses_with_exit_4(sqlite_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    cli = sqlite_cli
    keys = setup_world(cli)

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("authmw.cli.ssh.decide", broken)
    monkeypatch.delenv("AUTHMW_DEBUG", raising=False)
    assert cli.gate(key=keys["alice"], expect=4) == ""
    record = cli.last_audit()
    assert (record["reason"], record["detail"], record["outcome"]) == ("internal_error", "RuntimeError", "deny")


def test_the_gate_needs_no_master_key_and_writes_nothing(sqlite_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    cli = sqlite_cli
    keys = setup_world(cli)
    store = open_store(cli.url)
    revision = store.revision()
    store.close()
    db = Path(cli.url.removeprefix("sqlite:///"))
    before = db.read_bytes()
    (cli.home / "authmw.key").unlink()
    monkeypatch.setenv("AUTHMW_MASTER_KEY_FILE", str(cli.home / "nowhere.key"))
    assert cli.gate(key=keys["alice"]).startswith("restrict ")
    assert db.read_bytes() == before
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM authmw_meta WHERE name = 'revision'").fetchone()[0] == revision


def test_a_cold_process_imports_only_what_the_answer_needs(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    keys = setup_world(cli)
    key_type, blob = keys["alice"].split(" ")[:2]
    probe = (
        "import runpy, sys, json\n"
        "sys.argv = ['authmw', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('authmw', run_name='__main__')\n"
        "except SystemExit as exc:\n    code = exc.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('cryptography', 'jwt', 'yaml', 'psycopg')"
        " or m in ('authmw.policy', 'authmw.routes', 'authmw.signing', 'authmw.settings', 'authmw.store.facade',"
        " 'authmw.store.secrets', 'authmw.guard', 'authmw.cli.admin'))\n"
        "print(json.dumps({'code': code, 'heavy': heavy}), file=sys.stderr)\n"
    )
    argv = ["--notebook", "nb1", "--store", cli.url, "--audit-log", os.devnull, "ma-user", key_type, blob]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", probe, "ssh", "authorized-keys", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        check=False,
    )
    elapsed = time.perf_counter() - started
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report == {"code": 0, "heavy": []}, done.stderr
    assert done.stdout.startswith("restrict ssh-ed25519 ")
    assert elapsed < 5  # a loose bound (shared CI machines): the measured figure is in adapters/ssh/README.md


def _cold_answer(argv: list[str]) -> tuple[float, float]:
    return _cold(["-m", "authmw", "ssh", "authorized-keys", *argv])


def _cold(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one ``python ARGV`` process answering 0, environment cleared as sshd and the
    recipe's wrapper leave it."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, *argv],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SRC)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 0
    return wall, usage.ru_utime + usage.ru_stime


def test_a_cold_answer_costs_well_under_100_ms(sqlite_cli: Cli) -> None:
    """The issue's bound, as CPU time (what a login waits for on an idle host; wall time on a shared CI machine
    measures the other jobs): the best of seven cold processes after one that compiles the bytecode."""
    cli = sqlite_cli
    keys = setup_world(cli)
    key_type, blob = keys["alice"].split(" ")[:2]
    argv = ["--notebook", "nb1", "--store", cli.url, "--audit-log", str(cli.audit), "ma-user", key_type, blob]
    _cold_answer(argv)
    runs = [_cold_answer(argv) for _ in range(7)]
    wall, cpu = min(w for w, _ in runs), min(c for _, c in runs)
    print(f"cold authorized-keys: best wall {wall * 1000:.1f} ms, best CPU {cpu * 1000:.1f} ms")
    assert cpu < 0.1, runs
    assert len(cli.audit.read_text().splitlines()) == 8  # each answered, and recorded


class Daemon:
    """``authmw ssh serve`` in a process of its own, asked as sshd's command would through authmw.contrib.openssh."""

    def __init__(self, cli: Cli, *extra: str, url: str | None = None) -> None:
        self.socket = cli.home / "gate.sock"
        store = url or cli.url
        argv = ["ssh", "serve", "--store", store, "--socket", str(self.socket), "--audit-log", str(cli.audit)]
        self.log = cli.home / "gate.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "authmw", *argv, *extra],
                env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SRC)},
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while "answering authorized-keys requests" not in self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise AssertionError(self.log.read_text())
            time.sleep(0.02)

    def ask(self, *argv: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = openssh.main(["--socket", str(self.socket), *argv])
        return code, out.getvalue()

    def stop(self) -> None:
        self.process.terminate()
        assert self.process.wait(timeout=10) == 0


def test_the_daemon_answers_as_the_command_does(cli: Cli) -> None:
    keys = setup_world(cli)
    key_type, blob = keys["alice"].split(" ")[:2]
    cli.run("notebook", "update", "nb1", "--whitelist", "127.0.0.1")
    daemon = Daemon(cli, "--key-option", "pty")
    try:
        assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o600
        direct = cli.gate("--key-option", "pty", key=keys["alice"])
        assert daemon.ask("--notebook", "nb1", "ma-user", key_type, blob) == (0, direct)
        assert direct.startswith('restrict,pty,from="127.0.0.1/32" ssh-ed25519 ')
        assert cli.last_audit()["outcome"] == "allow"  # the daemon's record, in its audit log
        bob_type, bob_blob = keys["bob"].split(" ")[:2]
        assert daemon.ask("--notebook", "nb1", "ma-user", bob_type, bob_blob) == (1, "")
        assert cli.last_audit()["reason"] == "key_not_of_notebook"
        # A request cannot choose the daemon's options, and bad input is refused as by the command.
        assert daemon.ask("--notebook", "nb1", "--key-option", "port-forwarding", "ma-user", key_type, blob) == (2, "")
        assert daemon.ask("--notebook", "nb1", "--audit-log", os.devnull, "ma-user", key_type, blob) == (2, "")
        assert daemon.ask("--notebook", "nb1", "ma-user", key_type, blob[:-2]) == (2, "")
        assert cli.last_audit()["reason"] == "malformed_input"
        nested = b'{"argv": ' + b"[" * 5_000 + b"]" * 5_000 + b"}\n"  # RecursionError in json.loads
        for raw in (b"not json\n", b'{"argv": "ma-user"}\n', b'{"argv": [1]}\n', b'{"argv": []}', b"x" * 70000, nested):
            with socket.socket(socket.AF_UNIX) as conn:
                conn.connect(str(daemon.socket))
                conn.sendall(raw)
                conn.shutdown(socket.SHUT_WR)
                assert json.loads(conn.makefile("rb").read()) == {"code": 2, "line": None}, raw
        # The store is read on every request: a revocation refuses the very next login.
        cli.run("user", "disable", "alice")
        assert daemon.ask("--notebook", "nb1", "ma-user", key_type, blob) == (1, "")
        assert cli.last_audit()["reason"] == "user_disabled"
        cli.run("user", "enable", "alice")
        assert daemon.ask("--notebook", "nb1", "ma-user", key_type, blob)[0] == 0
        cli.run("keypair", "delete", "laptop", "--user", "alice")
        assert daemon.ask("--notebook", "nb1", "ma-user", key_type, blob) == (1, "")
        assert cli.last_audit()["reason"] == "no_keypair"
    finally:
        daemon.stop()
    # No daemon: a refusal, never a key.
    assert not daemon.socket.exists()
    assert daemon.ask("--notebook", "nb1", "ma-user", key_type, blob) == (3, "")


@pytest.mark.slow
def test_a_daemon_whose_postgresql_store_is_down_refuses(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    keys = setup_world(cli)
    key_type, blob = keys["alice"].split(" ")[:2]
    daemon = Daemon(cli, url="postgresql://gate:s3cret@127.0.0.1:1/authmw")  # starts anyway: down is not fatal
    try:
        started = time.monotonic()
        assert daemon.ask("--notebook", "nb1", "ma-user", key_type, blob) == (3, "")
        assert time.monotonic() - started < 5  # the gate's own deadlines (2 s), not an administrator's (10 s)
        record = cli.last_audit()
        assert (record["reason"], record["outcome"]) == ("store_unavailable", "deny")
    finally:
        daemon.stop()
    assert "s3cret" not in cli.audit.read_text()


def test_a_daemon_that_answers_nonsense_is_a_refusal(tmp_path: Path) -> None:
    path = tmp_path / "fake.sock"
    replies = [b"", b"garbage", b"[0]", b'{"code": 0, "line": null}', b'{"code": 0, "line": "a\\nb"}',
               b'{"code": 9, "line": null}', b'{"code": "0", "line": "restrict k"}', b"x" * 70000]  # fmt: skip
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()
        for reply in replies:
            answered = threading.Thread(target=_answer_once, args=(server, reply))
            answered.start()
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert openssh.main(["--socket", str(path), "--notebook", "nb1", "u", "t", "k"]) == 3, reply
            answered.join()
            assert out.getvalue() == ""
    assert openssh.main(["--notebook", "nb1", "u", "t", "k"]) == 2


def _answer_once(server: socket.socket, reply: bytes) -> None:
    conn, _ = server.accept()
    with conn:
        conn.makefile("rb").readline()
        conn.sendall(reply)


def test_a_cold_client_of_the_daemon_costs_a_fraction_of_100_ms(cli: Cli) -> None:
    keys = setup_world(cli)
    key_type, blob = keys["alice"].split(" ")[:2]
    daemon = Daemon(cli)
    try:
        argv = ["-m", "authmw.contrib.openssh", "--socket", str(daemon.socket), "--notebook", "nb1"]
        runs = [_cold([*argv, "ma-user", key_type, blob]) for _ in range(8)][1:]
    finally:
        daemon.stop()
    wall, cpu = min(w for w, _ in runs), min(c for _, c in runs)
    print(
        f"cold client of ssh serve ({cli.url.split(':')[0]}): best wall {wall * 1000:.1f} ms, CPU {cpu * 1000:.1f} ms"
    )
    assert cpu < 0.06, runs


def test_the_recipes_daemon_unit_runs_a_command_that_exists() -> None:
    unit = (SRC.parent / "adapters" / "ssh" / "authmw-ssh-gate.service").read_text().replace("\\\n", " ")
    command = shlex.split(next(line for line in unit.splitlines() if line.startswith("ExecStart=")))
    assert command[1:3] == ["-m", "authmw"]
    args = build_parser().parse_args(command[3:])
    assert (args.ssh_command, args.socket, args.audit_log) == ("serve", "/run/authmw-ssh/gate.sock", "syslog")
    assert "User=authmw-ssh" in unit and "RuntimeDirectoryMode=0700" in unit


def test_export_and_import_carry_notebooks_and_expiry(
    sqlite_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = sqlite_cli
    keys = setup_world(cli)
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    cli.run(
        "keypair", "import", "exp", "--user", "bob", "--public-key-file", _file(cli, keys["bob"]), "--expires", soon
    )
    cli.run("notebook", "update", "nb1", "--whitelist", "127.0.0.1")
    shown = cli.json("notebook", "show", "nb1")
    exported = cli.run("export")
    assert "expires_at" in exported and "notebooks" in exported
    path = tmp_path / "export.yaml"
    path.write_text(exported)
    copy = Cli(f"sqlite:///{tmp_path / 'copy.db'}", tmp_path, monkeypatch)
    copy.run("init")
    copy.run("import", str(path))
    assert copy.json("notebook", "show", "nb1") == shown
    assert copy.gate(key=keys["alice"]).startswith('restrict,from="127.0.0.1/32" ')
    assert copy.run("export") == exported


def test_an_import_refuses_a_notebook_opened_by_another_users_key(
    sqlite_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = sqlite_cli
    setup_world(cli)
    document = yaml.safe_load(cli.run("export"))
    bob = next(user["id"] for user in document["users"] if user["name"] == "bob")
    document["notebooks"][0]["owner_id"] = bob  # alice's key pair would open bob's notebook
    path = tmp_path / "tampered.yaml"
    path.write_text(yaml.safe_dump(document))
    copy = Cli(f"sqlite:///{tmp_path / 'copy.db'}", tmp_path, monkeypatch)
    copy.run("init")
    copy.run("import", str(path), expect=2)
    assert copy.json("notebook", "list") == []


def test_the_full_parser_answers_too(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    keys = setup_world(cli)
    key_type, blob = keys["alice"].split(" ")[:2]
    out = cli.run("--store", cli.url, "ssh", "authorized-keys", "--notebook", "nb1", "--audit-log", str(cli.audit),
                  "ma-user", key_type, blob)  # fmt: skip
    assert out.startswith("restrict ssh-ed25519 ")


def test_a_request_trickled_in_gets_one_deadline_for_the_whole_of_it() -> None:
    """The daemon's deadline is for the whole request, not for each read: a client sending a byte now and then
    (each read well within any per-read timeout) is cut off at the deadline."""
    from authmw.cli.ssh import _read_request

    ours, theirs = socket.socketpair()
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.05):
            with contextlib.suppress(OSError):
                theirs.sendall(b"x")

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            _read_request(ours, started + 0.5)
        assert time.monotonic() - started < 1.5
        assert _read_request_line(b'{"argv": []}\nmore') == b'{"argv": []}\nmore'  # stops at the line's end
    finally:
        stop.set()
        sender.join()
        ours.close()
        theirs.close()


def _read_request_line(data: bytes) -> bytes:
    from authmw.cli.ssh import _read_request

    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(data)  # no shutdown: the line's newline must end the read, not the peer
        return _read_request(ours, time.monotonic() + 2)
