"""``authmw token create``: an IAM token for scripts, verifiable with the store's signing keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from authmw.errors import InvalidToken
from authmw.store import open_store
from authmw.tokens import TokenVerifier
from tests.support.cli import fresh_store, run


@pytest.fixture
def store_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return fresh_store(tmp_path, monkeypatch, ["project", "create", "cn-north-4"], ["user", "create", "alice"])


def test_a_project_scoped_token_verifies_with_the_store_keys(store_url: str) -> None:
    code, out = run("token", "create", "--user", "alice", "--project", "cn-north-4", "--format", "json")
    assert code == 0
    issued = json.loads(out)
    assert set(issued) == {"token", "expires_at", "user", "project"} and issued["expires_at"].endswith("Z")
    store = open_store(store_url)
    try:
        claims = TokenVerifier(store.public_token_keys(["EdDSA"])).verify(issued["token"])
        assert (
            claims.user_name == "alice"
            and claims.project_id == issued["project"] == store.find_project("cn-north-4").id
        )
        assert claims.expires_at - claims.issued_at == 24 * 3600
    finally:
        store.close()


def test_the_text_form_is_the_token_alone(store_url: str) -> None:
    code, out = run("token", "create", "--user", "alice", "--ttl", "600")
    assert code == 0 and out.count(".") == 2 and out.endswith("\n") and " " not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--user", "bob"], "no user 'bob'"),
        (["--user", "alice", "--project", "nowhere"], "no project 'nowhere'"),
        (["--user", "alice", "--ttl", "5"], "--ttl"),
        (["--user", "carol"], "disabled"),
    ],
)
def test_refusals_exit_2(store_url: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert run("user", "create", "carol")[0] == 0 and run("user", "disable", "carol")[0] == 0
    assert run("token", "create", *argv)[0] == 2
    assert message in capsys.readouterr().err


def test_signing_key_rotate(store_url: str) -> None:
    old = json.loads(run("token", "create", "--user", "alice", "--format", "json")[1])["token"]
    code, out = run("signing-key", "rotate", "--format", "json")
    assert code == 0
    rotated = json.loads(out)
    new = json.loads(run("token", "create", "--user", "alice", "--format", "json")[1])["token"]
    store = open_store(store_url)
    try:
        keys = store.public_token_keys(["EdDSA"])
        assert set(keys) == {rotated["kid"], *rotated["retired"]} and len(rotated["retired"]) == 1
        verifier = TokenVerifier(keys)
        assert verifier.verify(old).user_name == verifier.verify(new).user_name == "alice"
    finally:
        store.close()


def test_an_es256_key_signs_tokens_that_verify_with_its_public_half(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("token", "create", "--user", "alice", "--algorithm", "ES256")[0] == 2  # no ES256 key yet
    assert "signing-key rotate --algorithm ES256" in capsys.readouterr().err
    code, out = run("signing-key", "rotate", "--algorithm", "ES256", "--format", "json")
    assert code == 0 and json.loads(out)["retired"] == []
    token = run("token", "create", "--user", "alice", "--algorithm", "ES256")[1].strip()
    store = open_store(store_url)
    try:
        es256 = store.public_token_keys(["ES256"])
        assert (
            set(es256) == {json.loads(out)["kid"]} and len(store.public_token_keys(["EdDSA"])) == 1
        )  # EdDSA untouched
    finally:
        store.close()
    assert TokenVerifier(es256, algorithms=["ES256"]).verify(token).user_name == "alice"
    with pytest.raises(InvalidToken):
        TokenVerifier(es256).verify(token)  # EdDSA only unless configured
