"""``authmw agency assume`` (temporary credentials for scripts) and ``authmw sealing-key rotate``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from authmw.sessions import SessionSealer
from authmw.store import open_store
from tests.support.cli import fresh_store, run

NOTEBOOK_GET = {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["modelarts:notebook:get"]}]}


@pytest.fixture
def store_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "notebooks.json").write_text(json.dumps(NOTEBOOK_GET))
    return fresh_store(
        tmp_path,
        monkeypatch,
        ["domain", "create", "op_svc_modelarts"],
        ["user", "create", "worker", "--domain", "op_svc_modelarts"],
        ["user", "create", "idle", "--domain", "op_svc_modelarts"],
        ["group", "create", "operators", "--domain", "op_svc_modelarts"],
        ["group", "add-user", "operators", "worker", "--domain", "op_svc_modelarts"],
        ["policy", "attach", "Agent Operator", "--group", "operators", "--domain", "op_svc_modelarts"],
        ["policy", "create", "notebooks", "--file", str(tmp_path / "notebooks.json")],
        ["agency", "create", "modelarts_agency", "--trust", "op_svc_modelarts", "--policy", "notebooks"],
    )


def test_assume_prints_credentials_that_open_with_the_store_keys(store_url: str) -> None:
    code, out = run(
        "agency", "assume", "modelarts_agency", "--user", "worker", "--caller-domain", "op_svc_modelarts",
        "--duration", "1800", "--format", "json",
    )  # fmt: skip
    assert code == 0
    credential = json.loads(out)
    assert set(credential) == {"access", "secret", "securitytoken", "expires_at"}
    store = open_store(store_url)
    try:
        keys, active = store.sealing_keys()
        session = SessionSealer(keys, active=active).open(credential["securitytoken"])
    finally:
        store.close()
    assert (session.access_key, session.secret_key) == (credential["access"], credential["secret"])
    assert (session.user_name, session.agency_name, session.expires_at - session.issued_at) == (
        "worker",
        "modelarts_agency",
        1800,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--user", "idle", "--caller-domain", "op_svc_modelarts"], "action_denied"),
        (["--user", "admin-less", "--caller-domain", "op_svc_modelarts"], "no user"),
        (["--user", "worker", "--caller-domain", "op_svc_modelarts", "--duration", "60"], "invalid_duration"),
        (["--user", "worker", "--caller-domain", "op_svc_modelarts", "--policy-file", "/nonexistent"], "cannot read"),
    ],
)
def test_refusals_exit_2(store_url: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert run("agency", "assume", "modelarts_agency", *argv)[0] == 2
    assert message in capsys.readouterr().err


def test_an_agency_of_another_trust_is_refused(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("user", "create", "local")[0] == 0
    assert run("agency", "assume", "modelarts_agency", "--user", "local")[0] == 2
    assert "agency_not_trusted" in capsys.readouterr().err


def test_a_session_policy_file_narrows(store_url: str, tmp_path: Path) -> None:
    (tmp_path / "session.json").write_text(json.dumps(NOTEBOOK_GET))
    code, out = run(
        "agency", "assume", "modelarts_agency", "--user", "worker", "--caller-domain", "op_svc_modelarts",
        "--policy-file", str(tmp_path / "session.json"), "--format", "json",
    )  # fmt: skip
    assert code == 0
    store = open_store(store_url)
    try:
        keys, active = store.sealing_keys()
        session = SessionSealer(keys, active=active).open(json.loads(out)["securitytoken"])
    finally:
        store.close()
    assert session.policies is not None and session.policies.decide("modelarts:notebook:get").allowed
    assert not session.policies.decide("modelarts:notebook:list").allowed


def test_sealing_key_rotate_keeps_old_tokens_open(store_url: str) -> None:
    argv = ("agency", "assume", "modelarts_agency", "--user", "worker", "--caller-domain", "op_svc_modelarts")
    old = json.loads(run(*argv, "--format", "json")[1])["securitytoken"]
    code, out = run("sealing-key", "rotate", "--format", "json")
    assert code == 0
    rotated = json.loads(out)
    new = json.loads(run(*argv, "--format", "json")[1])["securitytoken"]
    assert new.split(".")[1] == rotated["kid"] and old.split(".")[1] in rotated["retired"]
    store = open_store(store_url)
    try:
        keys, active = store.sealing_keys()
    finally:
        store.close()
    assert active == rotated["kid"] and set(keys) == {rotated["kid"], *rotated["retired"]}
    sealer = SessionSealer(keys, active=active)
    assert sealer.open(old).agency_name == sealer.open(new).agency_name == "modelarts_agency"


def test_an_invalid_session_policy_file_is_refused(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bogus.json").write_text(
        json.dumps({"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["bogus"]}]})
    )
    argv = ("agency", "assume", "modelarts_agency", "--user", "worker", "--caller-domain", "op_svc_modelarts")
    assert run(*argv, "--policy-file", str(tmp_path / "bogus.json"))[0] == 2
    assert "invalid_session_policy" in capsys.readouterr().err
