"""The IAM token endpoints through ``authmw proxy``: password login → token → calls; HEAD; attempt limits."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from authmw.tokens import TokenSigner
from tests.support.forms import Form, running
from tests.support.world import World

PASSWORD = "correct horse battery staple"
TOKENS = "/v3/auth/tokens"


@pytest.fixture(scope="module")
def proxy(world: World) -> Iterator[Form]:
    for name in ("login-user", "locked-user", "other-user"):
        world.store.create_user(name, password=PASSWORD)
        world.store.add_user_to_group("developers", name)
    with running("proxy", world) as form:
        yield form


def login(form: Form, user: str, password: str, *, scope: Any = None, query: str = "") -> httpx.Response:
    body: dict[str, Any] = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": user, "password": password, "domain": {"name": "default"}}},
            }
        }
    }
    if scope is not None:
        body["auth"]["scope"] = scope
    return httpx.post(form.url + TOKENS + query, json=body, timeout=30)


def test_a_password_login_gives_a_token_that_calls_the_api(proxy: Form, world: World) -> None:
    answer = login(proxy, "login-user", PASSWORD, scope={"project": {"name": "cn-north-4"}})
    assert answer.status_code == 201
    token = answer.headers["x-subject-token"]
    body = answer.json()["token"]
    assert body["user"]["name"] == "login-user" and body["user"]["domain"]["name"] == "default"
    assert body["project"]["id"] == world.project and body["methods"] == ["password"]
    assert body["expires_at"].endswith("Z") and "catalog" in body
    call = httpx.get(f"{proxy.url}/v1/{world.project}/notebooks", headers={"X-Auth-Token": token})
    assert call.status_code == 200 and proxy.facts(call.json())["method"] == "token"
    by_id = login(proxy, "login-user", PASSWORD, scope={"project": {"id": world.project}}, query="?nocatalog=true")
    assert by_id.status_code == 201 and "catalog" not in by_id.json()["token"]
    domain_scoped = login(proxy, "login-user", PASSWORD)
    assert domain_scoped.status_code == 201 and domain_scoped.json()["token"]["domain"]["name"] == "default"


def test_head_validates_a_subject_token(proxy: Form) -> None:
    caller = login(proxy, "login-user", PASSWORD).headers["x-subject-token"]
    subject = login(proxy, "login-user", PASSWORD).headers["x-subject-token"]
    check = httpx.head(proxy.url + TOKENS, headers={"X-Auth-Token": caller, "X-Subject-Token": subject})
    assert check.status_code == 200
    forged = subject[:-6] + ("AAAAAA" if not subject.endswith("AAAAAA") else "BBBBBB")
    check = httpx.head(proxy.url + TOKENS, headers={"X-Auth-Token": caller, "X-Subject-Token": forged})
    assert check.status_code == 404
    assert httpx.head(proxy.url + TOKENS, headers={"X-Subject-Token": subject}).status_code == 401


@pytest.mark.parametrize(
    ("user", "password", "scope"),
    [
        ("login-user", "wrong password!", None),
        ("nobody-at-all", PASSWORD, None),
        ("outsider", PASSWORD, None),  # a user without a password
    ],
)
def test_every_failed_login_gets_the_same_answer(proxy: Form, user: str, password: str, scope: Any) -> None:
    answer = login(proxy, user, password, scope=scope)
    assert answer.status_code == 401
    assert answer.json()["error_code"] == "authentication_failed"
    assert answer.json()["error_msg"] == "authentication failed"


def test_an_unknown_project_scope(proxy: Form) -> None:
    answer = login(proxy, "login-user", PASSWORD, scope={"project": {"name": "nowhere"}})
    assert (answer.status_code, answer.json()["error_code"]) == (403, "project_not_found")


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"[]", b'{"auth": {}}', json.dumps({"auth": {"identity": {"methods": ["token"]}}}).encode()],
)
def test_malformed_login_bodies(proxy: Form, body: bytes) -> None:
    answer = httpx.post(proxy.url + TOKENS, content=body)
    assert (answer.status_code, answer.json()["error_code"]) == (400, "malformed_body")


def test_password_guessing_is_limited_per_user(proxy: Form) -> None:
    for _ in range(5):
        assert login(proxy, "locked-user", "guess").status_code == 401
    locked = login(proxy, "locked-user", PASSWORD)  # even the right password waits now
    assert (locked.status_code, locked.json()["error_code"]) == (429, "too_many_attempts")
    assert int(locked.headers["retry-after"]) > 0
    assert login(proxy, "login-user", PASSWORD).status_code == 201  # other users are not affected


def test_other_methods(proxy: Form) -> None:
    assert httpx.put(proxy.url + TOKENS).status_code == 405


def test_the_attempt_limiter_slides_and_is_bounded() -> None:
    from authmw.iam_api import AttemptLimiter

    now = [1000.0]
    limiter = AttemptLimiter(per_user=2, per_address=3, window=10, max_keys=4, clock=lambda: now[0])
    assert limiter.retry_after("alice", "10.0.0.1") == 0
    limiter.reserve("alice", "10.0.0.1").failed()
    limiter.reserve("alice", "10.0.0.1").failed()
    assert limiter.retry_after("alice", "10.0.0.9") == 10  # the user is locked from any address
    assert limiter.retry_after("bob", "10.0.0.1") == 0
    limiter.reserve("bob", "10.0.0.1").failed()
    assert limiter.retry_after("carol", "10.0.0.1") == 10  # the address is locked for any user
    now[0] += 10.5
    assert limiter.retry_after("alice", "10.0.0.1") == 0  # the failures left the window
    limiter.reserve("alice", None).failed()
    limiter.reserve("alice", None).succeeded()
    assert limiter.retry_after("alice", None) == 0
    for name in "defgh":
        limiter.reserve(name, None).failed()
    assert len(limiter.windows._counters) <= 8  # type: ignore[attr-defined]  # users and addresses


def test_delete_revokes_in_every_form_within_a_second(proxy: Form, world: World) -> None:
    token = login(proxy, "login-user", PASSWORD, scope={"project": {"name": "cn-north-4"}}).headers["x-subject-token"]
    other = login(proxy, "other-user", PASSWORD).headers["x-subject-token"]
    path = f"/v1/{world.project}/notebooks"
    with running("asgi", world) as asgi_form:
        assert httpx.get(asgi_form.url + path, headers={"X-Auth-Token": token}).status_code == 200
        refused = httpx.delete(proxy.url + TOKENS, headers={"X-Auth-Token": other, "X-Subject-Token": token})
        assert (refused.status_code, refused.json()["error_code"]) == (403, "action_denied")  # not the owner
        caller = login(proxy, "login-user", PASSWORD).headers["x-subject-token"]
        gone = httpx.delete(proxy.url + TOKENS, headers={"X-Auth-Token": caller, "X-Subject-Token": token})
        assert gone.status_code == 204
        revoked_at = time.monotonic()
        for form in (proxy, asgi_form):
            while (answer := httpx.get(form.url + path, headers={"X-Auth-Token": token})).status_code == 200:
                assert time.monotonic() - revoked_at < 1.0, f"{form.name}: still accepted 1 s after revocation"
                time.sleep(0.02)
            assert (answer.status_code, answer.json()["error_code"]) == (401, "invalid_token")
    check = httpx.head(proxy.url + TOKENS, headers={"X-Auth-Token": caller, "X-Subject-Token": token})
    assert check.status_code == 404
    again = httpx.delete(proxy.url + TOKENS, headers={"X-Auth-Token": caller, "X-Subject-Token": token})
    assert again.status_code == 404
    assert httpx.delete(proxy.url + TOKENS, headers={"X-Auth-Token": token}).status_code == 401


def test_tokens_survive_a_signing_key_rotation(proxy: Form, world: World) -> None:
    path = f"/v1/{world.project}/notebooks"
    before = login(proxy, "login-user", PASSWORD, scope={"project": {"name": "cn-north-4"}}).headers["x-subject-token"]
    new_kid, retired = world.store.rotate_signing_key()
    user = world.store.find_user("login-user")
    after, _ = TokenSigner(*world.store.signing_key()).issue(
        user_id=user.id, user_name=user.name, domain_id=user.domain_id, domain_name="default",
        project_id=world.project, project_name="cn-north-4",
    )  # fmt: skip
    assert jwt.get_unverified_header(after)["kid"] == new_kid and jwt.get_unverified_header(before)["kid"] in retired
    for token in (before, after):  # the proxy's guard was built before the rotation: it reloads for the new kid
        assert httpx.get(proxy.url + path, headers={"X-Auth-Token": token}).status_code == 200


def test_a_caller_whose_password_changed_is_refused_by_head(proxy: Form, world: World) -> None:
    world.store.create_user("changing-user", password=PASSWORD)
    caller = login(proxy, "changing-user", PASSWORD).headers["x-subject-token"]
    subject = login(proxy, "login-user", PASSWORD).headers["x-subject-token"]
    both = {"X-Auth-Token": caller, "X-Subject-Token": subject}
    assert httpx.head(proxy.url + TOKENS, headers=both).status_code == 200
    time.sleep(1.01)  # password changes are recorded in whole seconds
    world.store.update_user("changing-user", password="another password for this user")
    deadline = time.monotonic() + 1.0
    while (status := httpx.head(proxy.url + TOKENS, headers=both).status_code) == 200:
        assert time.monotonic() < deadline, "the caller's token still works 1 s after its password changed"
        time.sleep(0.02)
    assert status == 401
