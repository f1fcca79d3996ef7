"""The CLI on hostile or broken input: one line on stderr and the documented exit code, never a traceback."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from authmw.cli import main
from authmw.store import Keyring, Store
from authmw.store.database import _redact, open_database


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AUTHMW_STORE", f"sqlite:///{tmp_path / 'authmw.db'}")
    monkeypatch.setenv("AUTHMW_MASTER_KEY_FILE", str(tmp_path / "authmw.key"))
    monkeypatch.delenv("AUTHMW_MASTER_KEY", raising=False)
    assert main(["init"], stdout=io.StringIO()) == 0
    assert main(["user", "create", "alice"], stdout=io.StringIO()) == 0
    return tmp_path


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 2, stdin: str = "") -> str:
    capsys.readouterr()
    assert main(argv, stdin=io.StringIO(stdin), stdout=io.StringIO()) == code
    err = capsys.readouterr().err
    assert err.startswith("authmw: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_yaml_alias_bomb_is_refused_at_once(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = ["format: authmw-export/1", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 12)]
    (home / "bomb.yaml").write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    assert "aliases" in _fails(["import", str(home / "bomb.yaml")], capsys)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    "argv",
    [
        ["user", "disable", "\udcff"],
        ["key", "disable", "\udcff"],
        ["key", "list", "alice", "--domain", "\udcff"],
        ["user", "create", "bob\x00"],
        ["group", "create", "\udcff"],
    ],
)
def test_undecodable_and_nul_arguments(home: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    _fails(argv, capsys)


def test_a_policy_file_that_is_not_utf8(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (home / "p.json").write_bytes(b'{"Version": "1.1", "Statement": [\xff]}')
    _fails(["policy", "create", "p", "--file", str(home / "p.json")], capsys)


def test_a_config_file_that_is_not_utf8(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (home / "c.yaml").write_bytes(b"store: \xff\n")
    _fails(["user", "list", "--config", str(home / "c.yaml")], capsys)


def test_a_key_file_in_a_missing_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTHMW_STORE", f"sqlite:///{tmp_path / 'authmw.db'}")
    monkeypatch.setenv("AUTHMW_MASTER_KEY_FILE", str(tmp_path / "missing" / "authmw.key"))
    monkeypatch.delenv("AUTHMW_MASTER_KEY", raising=False)
    _fails(["init"], capsys)


def test_an_unreachable_postgres_fails_fast_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.perf_counter()
    err = _fails(["user", "list", "--store", "postgresql://u@127.0.0.1:1/x?password=s3cretpw"], capsys, code=3)
    assert time.perf_counter() - started < 8
    assert "s3cretpw" not in err


def test_passwords_in_urls_are_redacted() -> None:
    assert "hunter2" not in _redact("postgresql://u:hunter2@h/db")
    assert "hunter2" not in _redact("postgresql://u@h/db?sslmode=require&password=hunter2")
    assert _redact("postgresql://u@h/db?sslmode=require") == "postgresql://u@h/db?sslmode=require"


def test_secret_key_from_stdin(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    argv = ["key", "create", "alice", "--access-key", "AKIDSTDIN001", "--secret-key-stdin", "--format", "json"]
    assert main(argv, stdin=io.StringIO("a-secret-from-stdin-0123\n"), stdout=out) == 0
    assert '"secret": "a-secret-from-stdin-0123"' in out.getvalue()
    _fails(
        ["key", "create", "alice", "--access-key", "AKIDSTDIN002", "--secret-key", "x" * 20, "--secret-key-stdin"],
        capsys,
        stdin="y" * 20,
    )


def test_a_wrong_master_key_is_refused_before_anything_is_written(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["key", "create", "alice"], stdout=io.StringIO()) == 0
    monkeypatch.setenv("AUTHMW_MASTER_KEY", "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=")
    assert "does not hold" in _fails(["key", "create", "alice"], capsys)


def test_concurrent_inits_share_one_key(tmp_path: Path) -> None:
    env = {**os.environ, "AUTHMW_MASTER_KEY_FILE": str(tmp_path / "authmw.key")}
    env.pop("AUTHMW_MASTER_KEY", None)
    env["AUTHMW_STORE"] = f"sqlite:///{tmp_path / 'authmw.db'}"
    runs = [
        subprocess.Popen([sys.executable, "-m", "authmw", "init"], env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
    assert len((tmp_path / "authmw.key").read_text().splitlines()) == 1


def test_sqlite_connections_close_with_their_threads(tmp_path: Path) -> None:
    store = Store(open_database(f"sqlite:///{tmp_path / 'a.db'}", create=True), Keyring.from_keys(b"\x02" * 32))
    store.initialize()

    def touch() -> None:
        store.revision()

    for _ in range(200):
        thread = threading.Thread(target=touch)
        thread.start()
        thread.join()
    assert len(os.listdir("/proc/self/fd")) < 100
    assert len(store.db._held) < 10  # type: ignore[attr-defined]
    store.close()


def test_a_json_export_imports_too(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    assert main(["export", "--format", "json"], stdout=out) == 0
    (home / "export.json").write_text(out.getvalue())
    monkeypatch.setenv("AUTHMW_STORE", f"sqlite:///{home / 'other.db'}")
    assert main(["init"], stdout=io.StringIO()) == 0
    assert main(["import", str(home / "export.json")], stdout=io.StringIO()) == 0
    again = io.StringIO()
    assert main(["export", "--format", "json"], stdout=again) == 0
    assert again.getvalue() == out.getvalue()
