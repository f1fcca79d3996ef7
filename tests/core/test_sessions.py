"""Sealed security tokens (``authmw.sessions``) and the key-reload rule they share with IAM tokens."""

from __future__ import annotations

import base64
import json
import os

import pytest

from authmw.errors import ConfigurationError, ExpiredSecurityToken, InvalidSecurityToken, SecurityTokenMismatch
from authmw.models import Session
from authmw.sessions import SessionSealer, new_temporary_key
from authmw.tokens import KeyReloads

NOW = 1_800_000_000
KEY_A, KEY_B = os.urandom(32), os.urandom(32)
POLICY = json.dumps({"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["modelarts:notebook:get"]}]})


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def session(**changes: object) -> Session:
    access, secret = new_temporary_key()
    values: dict[str, object] = {
        "access_key": access,
        "secret_key": secret,
        "issued_at": NOW,
        "expires_at": NOW + 900,
        "user_id": "u1",
        "user_name": "worker",
        "domain_id": "d1",
        "domain_name": "op_svc_modelarts",
        "agency_id": "a1",
        "agency_name": "modelarts_agency",
        "agency_domain_id": "d2",
        "agency_domain_name": "default",
        "policy": POLICY,
        "mfa": True,
    }
    values.update(changes)
    return Session(**values)  # type: ignore[arg-type]


def test_a_sealed_session_opens_to_the_same_values_and_resolves_its_key() -> None:
    sealer = SessionSealer({"a": KEY_A}, active="a", clock=Clock())
    original = session()
    token = sealer.seal(original)
    assert token.startswith("v1.a.") and original.secret_key not in token
    opened = sealer.open(token)
    assert opened == original and opened.policies is not None
    assert opened.chain == ("op_svc_modelarts/worker", "default/modelarts_agency", f"session/{original.access_key}")
    key = sealer.resolve(token, original.access_key)
    assert (key.access_key, key.secret_key, key.owner, key.temporary) == (
        original.access_key,
        original.secret_key,
        "a1",
        True,
    )
    assert key.session == original
    assert original.secret_key not in repr(opened) and POLICY not in repr(opened)


def test_the_token_method_session_acts_as_the_caller() -> None:
    sealer = SessionSealer({"a": KEY_A}, active="a", clock=Clock())
    own = session(agency_id=None, agency_name=None, agency_domain_id=None, agency_domain_name=None, policy=None)
    opened = sealer.open(sealer.seal(own))
    assert opened.policies is None and opened.agency_name is None
    assert opened.chain == ("op_svc_modelarts/worker", f"session/{own.access_key}")
    assert sealer.resolve(sealer.seal(own), own.access_key).owner == "u1"


def _flip(token: str, index: int) -> str:
    head, _, body = token.rpartition(".")
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[index] ^= 1
    return f"{head}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"


@pytest.mark.parametrize("index", [0, 11, 12, 40, -1])  # nonce, ciphertext, tag
def test_any_altered_byte_is_refused(index: int) -> None:
    sealer = SessionSealer({"a": KEY_A}, active="a", clock=Clock())
    token = sealer.seal(session())
    with pytest.raises(InvalidSecurityToken):
        sealer.open(_flip(token, index))


@pytest.mark.parametrize(
    "token",
    ["", "v1", "v1.a", "v1.a.", "v2.a.AAAA", "v1.zz.AAAA", "v1.a.!!!!", "v1.a." + "A" * 9000, "v1..AAAA"],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidSecurityToken):
        SessionSealer({"a": KEY_A}, active="a").open(token)


def test_a_token_names_its_key_and_cannot_be_moved_to_another() -> None:
    sealer = SessionSealer({"a": KEY_A, "b": KEY_B}, active="a", clock=Clock())
    token = sealer.seal(session())
    with pytest.raises(InvalidSecurityToken):  # the kid is authenticated: relabelling breaks the tag
        sealer.open("v1.b." + token.split(".", 2)[2])
    with pytest.raises(InvalidSecurityToken):  # another service's sealer knows nothing of it
        SessionSealer({"a": KEY_B}, active="a").open(token)


def test_expiry_is_checked_on_every_use_and_mismatch_is_its_own_error() -> None:
    clock = Clock()
    sealer = SessionSealer({"a": KEY_A}, active="a", clock=clock)
    original = session()
    token = sealer.seal(original)
    sealer.resolve(token, original.access_key)  # remembered now
    with pytest.raises(SecurityTokenMismatch):
        sealer.resolve(token, "ANOTHERACCESSKEY0000")
    clock.now = NOW + 900
    with pytest.raises(ExpiredSecurityToken):
        sealer.resolve(token, original.access_key)
    with pytest.raises(ExpiredSecurityToken):  # not remembered any more, and still expired
        sealer.open(token)


def test_the_cache_is_bounded() -> None:
    sealer = SessionSealer({"a": KEY_A}, active="a", clock=Clock(), cache_size=3)
    tokens = [sealer.seal(session()) for _ in range(5)]
    for token in tokens:
        sealer.open(token)
    assert len(sealer._cache) == 3 and tokens[0] not in sealer._cache


def test_keys_reload_for_an_unknown_kid_as_key_reloads_allows() -> None:
    timer, revision = Clock(0), [1]
    other = SessionSealer({"b": KEY_B}, active="b")
    token = other.seal(session())
    loads: list[int] = []

    def refresh() -> tuple[dict[str, bytes], str]:
        loads.append(1)
        return {"a": KEY_A, "b": KEY_B} if revision[0] > 1 else {"a": KEY_A}, "a"

    sealer = SessionSealer(
        {"a": KEY_A}, active="a", refresh=refresh, refresh_interval=10, timer=timer, revision=lambda: revision[0]
    )
    with pytest.raises(InvalidSecurityToken):
        sealer.open(token)  # first unknown kid: one reload (the key is not there yet)
    with pytest.raises(InvalidSecurityToken):
        sealer.open(token)  # same revision, inside the interval: no reload
    assert len(loads) == 1
    revision[0] = 2  # a rotation elsewhere moves the store revision: reload at once
    assert sealer.open(token).user_name == "worker"
    assert len(loads) == 2


def test_key_reloads_without_a_revision_are_rate_limited() -> None:
    timer = Clock(0)
    reloads = KeyReloads(10, timer)
    assert reloads.due() and not reloads.due()
    timer.now = 9.9
    assert not reloads.due()
    timer.now = 10
    assert reloads.due()


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        SessionSealer({"a": b"short"}, active="a")
    with pytest.raises(ConfigurationError):
        SessionSealer({"a": KEY_A}, active="b")
    with pytest.raises(ConfigurationError):
        SessionSealer({"a": KEY_A}).seal(session())  # opens only


def test_temporary_keys_look_like_iam_keys() -> None:
    access, secret = new_temporary_key()
    assert len(access) == 20 and access.isalnum() and access.upper() == access
    assert len(secret) == 40 and secret.isalnum()
    assert new_temporary_key() != new_temporary_key()


def test_the_origin_token_and_its_scope_travel_sealed() -> None:
    sealer = SessionSealer({"a": KEY_A}, active="a", clock=Clock())
    original = session(agency_id=None, token_id="f" * 32, iam_token=True, project_id="p1")
    opened = sealer.open(sealer.seal(original))
    assert (opened.token_id, opened.iam_token, opened.project_id) == ("f" * 32, True, "p1")
    assert sealer.open(sealer.seal(session())).token_id is None


def test_sessions_with_the_same_policy_share_its_compiled_form() -> None:
    sealer = SessionSealer({"a": KEY_A}, active="a", clock=Clock())
    first, second = (sealer.open(sealer.seal(session())) for _ in range(2))
    assert first.policies is second.policies and first.policies is not None
