"""The administration CLI end to end (SPEC §8), on SQLite and PostgreSQL: init, every verb, export/import,
secrets never at rest in clear, one-line errors with exit 2."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import yaml

from authmw.cli import main
from authmw.signing.signer import sign_request
from authmw.store.schema import SCHEMA_VERSION
from tests.support.pgutil import pg_schema

POLICY = {
    "Version": "1.1",
    "Statement": [
        {"Effect": "Allow", "Action": ["modelarts:trainJob:*", "modelarts:notebook:*"]},
        {"Effect": "Deny", "Action": ["modelarts:trainJob:delete"]},
    ],
}
PASSWORDS = {"alice": "alice-password-7Q!", "bob": "bob-password-9Z?"}
PASSPHRASE = "export passphrase, long enough"


class Cli:
    """Runs ``authmw`` in-process against one store and master key file."""

    def __init__(self, url: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.url, self.home = url, home
        monkeypatch.setenv("AUTHMW_STORE", url)
        monkeypatch.setenv("AUTHMW_MASTER_KEY_FILE", str(home / "authmw.key"))
        monkeypatch.delenv("AUTHMW_MASTER_KEY", raising=False)
        monkeypatch.setenv("AUTHMW_EXPORT_PASSPHRASE", PASSPHRASE)

    def run(self, *argv: str, stdin: str = "", expect: int = 0) -> str:
        out = io.StringIO()
        code = main(list(argv), stdin=io.StringIO(stdin), stdout=out)
        assert code == expect, (argv, code, out.getvalue())
        return out.getvalue()

    def json(self, *argv: str, stdin: str = "") -> object:
        return json.loads(self.run(*argv, "--format", "json", stdin=stdin))


@pytest.fixture(params=["sqlite", "postgresql"])
def cli(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    if request.param == "sqlite":
        yield Cli(f"sqlite:///{tmp_path / 'authmw.db'}", tmp_path, monkeypatch)
    else:
        with pg_schema() as url:
            yield Cli(url, tmp_path, monkeypatch)


def populate(cli: Cli, tmp_path: Path) -> dict[str, str]:
    """Every kind of entity through the CLI only; returns the secrets that were shown once."""
    shown: dict[str, str] = {}
    assert cli.json("init")["schema_to"] == SCHEMA_VERSION  # type: ignore[index]
    assert set(cli.json("domain", "create", "acme")) == {"id", "name"}  # type: ignore[arg-type]
    project = cli.json("project", "create", "cn-north-4", "--region", "cn-north-4")
    assert set(project) == {"id", "name"}  # type: ignore[arg-type]
    cli.run("project", "create", "eu-west-0", "--domain", "acme")
    for name, password in PASSWORDS.items():
        cli.run("user", "create", name, "--password-stdin", stdin=password + "\n")
    cli.run("user", "create", "carol", "--domain", "acme")
    cli.run("user", "create", "root")
    cli.run("user", "disable", "bob")
    for group, user in (("developers", "alice"), ("admin", "root")):
        cli.run("group", "create", group)
        cli.run("group", "add-user", group, user)
    key = cli.json("key", "create", "alice")
    assert set(key) == {"access", "secret", "user", "status"}  # type: ignore[arg-type]
    shown["alice-key"] = key["secret"]  # type: ignore[index]
    chosen = cli.json("key", "create", "root", "--access-key", "AKIDROOT0001", "--secret-key", "r00t-secret-" * 3)
    shown["root-key"] = chosen["secret"]  # type: ignore[index]
    cli.run("key", "disable", "AKIDROOT0001")
    (tmp_path / "policy.json").write_text(json.dumps(POLICY))
    cli.run("policy", "create", "train-and-notebooks", "--file", str(tmp_path / "policy.json"))
    cli.run("policy", "attach", "train-and-notebooks", "--group", "developers")
    cli.run("policy", "attach", "ModelArts FullAccess", "--user", "root")
    agency = cli.json(
        "agency", "create", "modelarts_agency", "--trust", "op_svc_modelarts", "--policy", "train-and-notebooks"
    )
    assert agency["max_duration"] == 86_400  # type: ignore[index]
    ws = cli.json("workspace", "create", "team-a", "--auth-type", "INTERNAL", "--grant", "alice", "--owner", "root")
    assert set(ws) == {"id", "name", "auth_type"} and ws["auth_type"] == "INTERNAL"  # type: ignore[index, arg-type]
    cli.run("workspace", "create", "team-b", "--auth-type", "private", "--owner", "alice")
    pair = cli.json("keypair", "create", "laptop", "--user", "alice", "--type", "rsa")
    shown["private-key"] = pair["private_key"]  # type: ignore[index]
    (tmp_path / "id.pub").write_text(pair["public_key"] + " alice@laptop\n")  # type: ignore[index]
    cli.run("keypair", "import", "again", "--user", "alice", "--public-key-file", str(tmp_path / "id.pub"))
    cli.run("whitelist", "set", "--workspace", "team-a", "10.0.0.0/8", "2001:db8::/32")
    cli.run("whitelist", "set", "--user", "alice", "192.0.2.7")
    cli.run("whitelist", "set", "--route", "POST /v2/{project_id}/training-jobs", "198.51.100.0/24")
    return shown


def test_every_verb_then_export_import_export_is_identical(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = populate(cli, tmp_path)
    users = cli.json("user", "list")
    assert [(u["domain"], u["name"], u["enabled"]) for u in users] == [  # type: ignore[union-attr, index]
        ("acme", "carol", True),
        ("default", "alice", True),
        ("default", "bob", False),
        ("default", "root", True),
    ]
    assert [u["name"] for u in cli.json("user", "list", "--domain", "acme")] == ["carol"]  # type: ignore[union-attr, index]
    assert [k["status"] for k in cli.json("key", "list", "root")] == ["inactive"]  # type: ignore[union-attr, index]
    authorized = cli.run("keypair", "authorized-keys", "--user", "alice").splitlines()
    assert [line.split()[-1] for line in authorized] == ["authmw:alice/again", "authmw:alice/laptop"]
    plain = cli.run("export")
    assert plain.startswith('format: "authmw-export/1"\n')
    with_secrets = cli.run("export", "--include-secrets")

    # a fresh store (same backend, another place, another master key) takes the export, all of it
    fresh_home = tmp_path / "fresh"
    fresh_home.mkdir()
    with pg_schema() if cli.url.startswith("postgresql") else _sqlite(fresh_home) as url:
        other = Cli(url, fresh_home, monkeypatch)
        other.run("init")
        (tmp_path / "export.yaml").write_text(with_secrets)
        counts = other.json("import", str(tmp_path / "export.yaml"))
        assert counts["users"] == 4 and counts["access_keys"] == 2  # type: ignore[index]
        assert other.run("export") == plain
        # the secrets came along: the imported store verifies alice's signature
        signed = sign_request(
            "GET",
            "https://api.example.com/v1/p/notebooks",
            access_key=cli.json("key", "list", "alice")[0]["access"],  # type: ignore[index]
            secret_key=shown["alice-key"],
        )
        raw = _raw(signed)
        (tmp_path / "req.http").write_bytes(raw)
        report = json.loads(other.run("verify-request", "--file", str(tmp_path / "req.http"), "--format", "json"))
        assert report["valid"] is True
        # and an import into a store that already holds identities is refused whole
        other.run("import", str(tmp_path / "export.yaml"), expect=2)
        other.run("import", str(tmp_path / "export.yaml"), "--replace")
        assert other.run("export") == plain


def _sqlite(home: Path) -> Iterator[str]:
    from contextlib import nullcontext

    return nullcontext(f"sqlite:///{home / 'authmw.db'}")  # type: ignore[return-value]


def _raw(signed: object) -> bytes:
    split = urlsplit(signed.url)  # type: ignore[attr-defined]
    target = split.path + (f"?{split.query}" if split.query else "")
    lines = [f"{signed.method} {target} HTTP/1.1"]  # type: ignore[attr-defined]
    lines += [f"{name}: {value}" for name, value in signed.headers.items()]  # type: ignore[attr-defined]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + signed.body  # type: ignore[attr-defined]


def test_explain_uses_groups_workspaces_and_policies(cli: Cli, tmp_path: Path) -> None:
    populate(cli, tmp_path)
    allowed = cli.json("explain", "--user", "alice", "--action", "modelarts:trainJob:create")
    assert allowed["decision"] == "allow"  # type: ignore[index]
    assert allowed["statement"] == {"policy": "train-and-notebooks", "index": 0}  # type: ignore[index]
    out = io.StringIO()
    argv = ["explain", "--user", "alice", "--action", "modelarts:trainJob:delete", "--format", "json"]
    assert main(argv, stdout=out) == 1
    assert json.loads(out.getvalue())["explicit"] is True
    out = io.StringIO()
    argv = ["explain", "--user", "carol", "--domain", "acme", "--action", "modelarts:trainJob:create"]
    assert main([*argv, "--workspace", "team-a"], stdout=out) == 2  # team-a is a workspace of another domain
    out = io.StringIO()
    assert (
        main(
            ["explain", "--user", "alice", "--action", "modelarts:trainJob:create", "--workspace", "team-b"], stdout=out
        )
        == 0
    )
    assert (
        main(["explain", "--user", "root", "--action", "modelarts:pool:create", "--workspace", "team-b"], stdout=out)
        == 0
    )
    out = io.StringIO()
    assert main(["explain", "--user", "bob", "--action", "modelarts:trainJob:create"], stdout=out) == 1
    assert "disabled" in out.getvalue()


def test_verify_request_with_the_store(cli: Cli, tmp_path: Path) -> None:
    populate(cli, tmp_path)
    key = cli.json("key", "create", "alice")
    signed = sign_request(
        "POST",
        "https://api.example.com/v2/p/training-jobs",
        body=b"{}",
        access_key=key["access"],  # type: ignore[index]
        secret_key=key["secret"],  # type: ignore[index]
    )
    (tmp_path / "req.http").write_bytes(_raw(signed))
    report = json.loads(cli.run("verify-request", "--file", str(tmp_path / "req.http"), "--format", "json"))
    assert report["valid"] and report["access_key"] == key["access"]  # type: ignore[index]
    cli.run("key", "disable", key["access"])  # type: ignore[index]
    out = io.StringIO()
    assert main(["verify-request", "--file", str(tmp_path / "req.http"), "--format", "json"], stdout=out) == 1
    assert json.loads(out.getvalue())["reason"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["user", "create", "alice"], "already exists"),
        (["user", "create", "9lives"], "invalid user name"),
        (["user", "disable", "nobody"], "no user"),
        (["group", "add-user", "nogroup", "alice"], "no group"),
        (["key", "create", "alice", "--access-key", "AKIDEXAMPLE9"], "both"),
        (["key", "disable", "AKIDNOSUCHKEY"], "no access key"),
        (["policy", "attach", "train-and-notebooks"], "one of the arguments"),
        (["policy", "create", "x", "--file", "/nonexistent.json"], "cannot read"),
        (["agency", "create", "a1", "--trust", "op_svc_x", "--max-duration", "10"], "900-86400"),
        (["workspace", "create", "default"], "reserved"),
        (["workspace", "create", "ws"], "4-64"),
        (["workspace", "create", "team-z", "--grant", "alice"], "INTERNAL"),
        (["keypair", "create", "k", "--user", "alice", "--type", "dsa"], "invalid choice"),
        (["whitelist", "set", "--user", "alice", "10.0.0.1/8"], "host bits"),
        (
            ["whitelist", "set", "--user", "alice", "1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4", "1.1.1.5", "1.1.1.6"],
            "at most 5",
        ),
        (["whitelist", "set", "1.1.1.1"], "one of the arguments"),
        # A route whitelist under a name the guard never looks up would restrict nothing (issue 12, item 13).
        (["whitelist", "set", "--route", "modelarts:notebook:lsit", "10.0.0.1"], "neither an action"),
        (["whitelist", "set", "--route", "GET /v1/notebooks", "10.0.0.1"], "neither an action"),
        (["whitelist", "set", "--route", "POST /v2/{project_id}/training-jobs/", "10.0.0.1"], "neither an action"),
        (["domain", "create", "default"], "already exists"),
        (["explain", "--user", "alice", "--action", "bad"], "service:resourceType:operation"),
        (["import", "/nonexistent.yaml"], "cannot read"),
        (["export", "--include-secrets", "--passphrase-file", "/nonexistent"], "cannot read"),
        (["user", "list", "--domain", "nope"], "no domain"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    cli: Cli, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    cli.run("init")
    cli.run("user", "create", "alice")
    revision_before = cli.run("export")
    capsys.readouterr()
    cli.run(*argv, expect=2)
    err = capsys.readouterr().err
    assert err.startswith("authmw: ") and err.count("\n") == 1 and message in err, err
    assert "Traceback" not in err
    assert cli.run("export") == revision_before  # nothing half-written


def test_secrets_never_rest_in_clear(cli: Cli, tmp_path: Path) -> None:
    shown = populate(cli, tmp_path)
    secrets = [*shown.values(), *PASSWORDS.values()]
    exported = cli.run("export") + cli.run("export", "--include-secrets")
    if cli.url.startswith("sqlite"):
        path = Path(cli.url.removeprefix("sqlite:///"))
        at_rest = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    else:
        with psycopg.connect(cli.url) as conn:
            tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
            at_rest = "".join(
                str(row) for table in tables for row in conn.execute(f"SELECT * FROM {table}").fetchall()
            ).encode()
    assert len(at_rest) > 1000
    for secret in secrets:
        for line in secret.splitlines():
            if len(line) >= 8 and "-----" not in line:
                assert line.encode() not in at_rest
                assert line not in exported
    assert "password_hash" not in cli.run("export")  # hashes are secrets too: only sealed, only on request


def test_export_with_secrets_needs_the_passphrase_to_import(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(cli, tmp_path)
    (tmp_path / "export.yaml").write_text(cli.run("export", "--include-secrets"))
    document = yaml.safe_load((tmp_path / "export.yaml").read_text())
    assert document["access_keys"][0]["secret_sealed"] and "secrets_salt" in document
    cli.run("init")
    monkeypatch.setenv("AUTHMW_EXPORT_PASSPHRASE", "a different passphrase")
    cli.run("import", str(tmp_path / "export.yaml"), "--replace", expect=2)
    monkeypatch.delenv("AUTHMW_EXPORT_PASSPHRASE")
    cli.run("import", str(tmp_path / "export.yaml"), "--replace", expect=2)
    (tmp_path / "plain.yaml").write_text(cli.run("export"))
    cli.run("import", str(tmp_path / "plain.yaml"), "--replace", expect=2)  # keys without secrets: refused
    (tmp_path / "pass").write_text(PASSPHRASE + "\n")
    cli.run("import", str(tmp_path / "export.yaml"), "--replace", "--passphrase-file", str(tmp_path / "pass"))


def test_master_key_rotation_keeps_every_secret(cli: Cli, tmp_path: Path) -> None:
    shown = populate(cli, tmp_path)
    before = (cli.home / "authmw.key").read_text()
    report = cli.json("master-key", "rotate")
    assert report["resealed"] == 4  # type: ignore[index]  # two access keys, the signing and the sealing key
    after = (cli.home / "authmw.key").read_text()
    assert after != before and len(after.splitlines()) == 1
    assert stat.S_IMODE((cli.home / "authmw.key").stat().st_mode) == 0o600
    key = cli.json("key", "list", "alice")[0]["access"]  # type: ignore[index]
    signed = sign_request("GET", "https://h/x", access_key=key, secret_key=shown["alice-key"])
    (tmp_path / "req.http").write_bytes(_raw(signed))
    assert json.loads(cli.run("verify-request", "--file", str(tmp_path / "req.http"), "--format", "json"))["valid"]


def test_rotation_refuses_a_key_from_the_environment(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHMW_MASTER_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
    cli.run("init")
    cli.run("master-key", "rotate", expect=2)


def test_init_never_mints_a_new_key_for_a_sealed_store(cli: Cli) -> None:
    cli.run("init")
    (cli.home / "authmw.key").unlink()
    cli.run("init", expect=2)
    assert not (cli.home / "authmw.key").exists()


def test_a_readable_key_file_is_refused(cli: Cli) -> None:
    cli.run("init")
    os.chmod(cli.home / "authmw.key", 0o644)
    cli.run("user", "list", expect=2)


def test_the_console_script_and_help(tmp_path: Path) -> None:
    env = {**os.environ, "AUTHMW_MASTER_KEY_FILE": "", "AUTHMW_STORE": ""}
    env.pop("AUTHMW_MASTER_KEY", None)
    done = subprocess.run(
        [sys.executable, "-m", "authmw", "init"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((tmp_path / "authmw.key").stat().st_mode) == 0o600
    assert (tmp_path / "authmw.db").exists()
    commands = [
        ["init"], ["migrate"], ["domain", "create"], ["project", "create"], ["user", "create"], ["user", "disable"],
        ["user", "list"], ["group", "create"], ["group", "add-user"], ["key", "create"], ["key", "disable"],
        ["key", "enable"], ["key", "delete"], ["policy", "create"], ["policy", "attach"], ["policy", "validate"],
        ["policy", "check"], ["policy", "lint"], ["agency", "create"], ["workspace", "create"],
        ["keypair", "create"], ["keypair", "import"], ["keypair", "authorized-keys"], ["whitelist", "set"],
        ["export"], ["import"], ["explain"], ["verify-request"], ["master-key", "rotate"],
    ]  # fmt: skip
    for command in commands:
        with pytest.raises(SystemExit) as exited:
            main([*command, "--help"], stdout=io.StringIO())
        assert exited.value.code == 0, command
