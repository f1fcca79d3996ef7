"""The IAM endpoints write one audit record per call, like requests: logins (succeeded, failed, locked), tokens
checked and revoked, temporary credentials issued and agencies assumed; and never a secret."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest

from authmw.audit import EVENTS
from tests.support.forms import Form, running
from tests.support.world import World

PASSWORD = "audited horse battery staple"
TOKENS = "/v3/auth/tokens"
STS = "/v3.0/OS-CREDENTIAL/securitytokens"
SESSION_POLICY = {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["modelarts:notebook:get"]}]}
REQUEST_KEYS = {  # every record has the request record's keys, and the event's own facts besides
    "event", "request_id", "outcome", "enforced", "status", "error_code", "detail", "method", "path", "client",
    "route", "action", "resource", "auth_method", "access_key", "user_id", "user_name", "domain", "project_id",
    "workspace_id", "policy", "statement", "reason", "agency", "delegation",
}  # fmt: skip


@pytest.fixture(scope="module")
def proxy(world: World) -> Iterator[Form]:
    store = world.store
    store.create_domain("op_svc_audit")
    store.create_group("operators", domain="op_svc_audit")
    store.attach_policy("Agent Operator", group="operators", domain="op_svc_audit")
    store.create_user("audit-worker", domain="op_svc_audit", password=PASSWORD)
    store.add_user_to_group("operators", "audit-worker", domain="op_svc_audit")
    store.create_agency("audit_agency", trust="op_svc_audit", policies=["ModelArts CommonOperations"])
    for name in ("audited", "audited-locked", "audited-other"):
        store.create_user(name, password=PASSWORD)
    with running("proxy", world) as form:
        yield form


Secrets = list[str]


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> Callable[[], list[dict[str, Any]]]:
    """The IAM event records written since the last call (each call takes them)."""
    caplog.set_level(logging.INFO, logger="authmw.audit")

    def take() -> list[dict[str, Any]]:
        found = [json.loads(r.getMessage()) for r in caplog.records if r.name == "authmw.audit"]
        caplog.clear()
        return [r for r in found if r["event"] != "request"]

    return take


def body(user: str, password: str, domain: str = "default") -> dict[str, Any]:
    user_part = {"name": user, "password": password, "domain": {"name": domain}}
    return {"auth": {"identity": {"methods": ["password"], "password": {"user": user_part}}}}


def one(take: Callable[[], list[dict[str, Any]]], event: str, secrets: Secrets) -> dict[str, Any]:
    found = take()
    assert [r["event"] for r in found] == [event]
    record = found[0]
    assert set(record) >= REQUEST_KEYS and record["event"] in EVENTS and record["request_id"]
    text = json.dumps(record)
    for secret in secrets:
        assert secret not in text
    return record


def test_logins_are_audited(proxy: Form, records: Callable[[], list[dict[str, Any]]], world: World) -> None:
    records()
    answer = httpx.post(proxy.url + TOKENS, json=body("audited", PASSWORD), timeout=30)
    token = answer.headers["x-subject-token"]
    record = one(records, "login", [PASSWORD, token])
    user = world.store.find_user("audited")
    assert (record["outcome"], record["status"], record["error_code"]) == ("allow", None, None)
    assert (record["user_id"], record["user_name"], record["domain"]) == (user.id, "audited", "default")
    assert record["token_id"] == jwt.decode(token, options={"verify_signature": False})["jti"]
    assert record["expires_at"].endswith("Z") and record["path"] == TOKENS and record["method"] == "POST"

    wrong = "a wrong password for audited"
    failed = httpx.post(proxy.url + TOKENS, json=body("audited", wrong), timeout=30)
    assert failed.status_code == 401
    record = one(records, "login_failed", [wrong, PASSWORD])
    assert (record["outcome"], record["status"], record["error_code"]) == ("deny", 401, "authentication_failed")
    assert record["user_id"] == user.id and record["request_id"] == failed.json()["request_id"]

    typed = "my secret password typed as the user name"  # an unknown name is not recorded
    assert httpx.post(proxy.url + TOKENS, json=body(typed, wrong), timeout=30).status_code == 401
    record = one(records, "login_failed", [typed, wrong])
    assert record["user_name"] is None and record["user_id"] is None

    assert httpx.post(proxy.url + TOKENS, content=b"{", timeout=30).status_code == 400
    assert one(records, "login_failed", [])["error_code"] == "malformed_body"


def test_a_lockout_is_audited(proxy: Form, records: Callable[[], list[dict[str, Any]]]) -> None:
    for i in range(5):
        assert httpx.post(proxy.url + TOKENS, json=body("audited-locked", f"guess {i}"), timeout=30).status_code == 401
    records()
    locked = httpx.post(proxy.url + TOKENS, json=body("audited-locked", PASSWORD), timeout=30)
    assert locked.status_code == 429
    record = one(records, "login_locked", [PASSWORD])
    assert (record["outcome"], record["status"], record["error_code"]) == ("deny", 429, "too_many_attempts")
    assert record["user_name"] == "audited-locked"


def test_token_checks_and_revocations_are_audited(proxy: Form, records: Callable[[], list[dict[str, Any]]]) -> None:
    caller = httpx.post(proxy.url + TOKENS, json=body("audited", PASSWORD), timeout=30).headers["x-subject-token"]
    subject = httpx.post(proxy.url + TOKENS, json=body("audited", PASSWORD), timeout=30).headers["x-subject-token"]
    other = httpx.post(proxy.url + TOKENS, json=body("audited-other", PASSWORD), timeout=30).headers["x-subject-token"]
    subject_id = jwt.decode(subject, options={"verify_signature": False})["jti"]
    secrets = [caller, subject, other, PASSWORD]
    records()
    both = {"X-Auth-Token": caller, "X-Subject-Token": subject}
    assert httpx.head(proxy.url + TOKENS, headers=both).status_code == 200
    record = one(records, "token_checked", secrets)
    assert record["outcome"] == "allow" and record["subject_token_id"] == subject_id
    assert record["user_name"] == "audited" and record["auth_method"] == "token"
    assert httpx.head(proxy.url + TOKENS, headers={**both, "X-Subject-Token": "not-a-token"}).status_code == 404
    record = one(records, "token_checked", secrets)
    assert (record["outcome"], record["status"], record["error_code"]) == ("deny", 404, "invalid_token")

    refused = httpx.delete(proxy.url + TOKENS, headers={"X-Auth-Token": other, "X-Subject-Token": subject})
    assert refused.status_code == 403
    record = one(records, "token_revoked", secrets)
    assert (record["outcome"], record["error_code"], record["user_name"]) == ("deny", "action_denied", "audited-other")
    assert httpx.delete(proxy.url + TOKENS, headers=both).status_code == 204
    record = one(records, "token_revoked", secrets)
    assert record["outcome"] == "allow" and record["subject_token_id"] == subject_id


def test_temporary_credentials_are_audited(proxy: Form, records: Callable[[], list[dict[str, Any]]]) -> None:
    login = httpx.post(proxy.url + TOKENS, json=body("audit-worker", PASSWORD, "op_svc_audit"), timeout=30)
    token = login.headers["x-subject-token"]
    records()
    identity = {
        "methods": ["assume_role"],
        "assume_role": {"domain_name": "default", "agency_name": "audit_agency", "duration_seconds": 1800},
        "policy": SESSION_POLICY,
    }
    answer = httpx.post(proxy.url + STS, json={"auth": {"identity": identity}}, headers={"X-Auth-Token": token})
    assert answer.status_code == 201, answer.text
    credential = answer.json()["credential"]
    policy_text = json.dumps(SESSION_POLICY, separators=(",", ":"), sort_keys=True)
    secrets = [token, credential["secret"], credential["securitytoken"], policy_text, "modelarts:notebook:get"]
    record = one(records, "agency_assumed", secrets)
    assert record["outcome"] == "allow" and record["user_name"] == "audit-worker" and record["domain"] == "op_svc_audit"
    assert (record["agency"], record["agency_domain"], record["duration"]) == ("audit_agency", "default", 1800)
    assert record["session_policy_sha256"] == hashlib.sha256(policy_text.encode()).hexdigest()
    assert record["issued_access_key"] == credential["access"] and record["expires_at"] == credential["expires_at"]
    assert record["action"] == "iam:agencies:assume" and record["resource"].endswith(":agency:audit_agency")
    assert record["delegation"] == [
        "op_svc_audit/audit-worker",
        "default/audit_agency",
        f"session/{credential['access']}",
    ]

    identity["assume_role"]["agency_name"] = "no_such_agency"
    refused = httpx.post(proxy.url + STS, json={"auth": {"identity": identity}}, headers={"X-Auth-Token": token})
    assert refused.status_code == 403
    record = one(records, "agency_assumed", [token, policy_text])
    assert (record["outcome"], record["error_code"], record["agency"]) == (
        "deny",
        "agency_not_trusted",
        "no_such_agency",
    )

    own = {"methods": ["token"], "token": {"duration_seconds": 900}}
    answer = httpx.post(proxy.url + STS, json={"auth": {"identity": own}}, headers={"X-Auth-Token": token})
    assert answer.status_code == 201
    credential = answer.json()["credential"]
    record = one(records, "credentials_issued", [token, credential["secret"], credential["securitytoken"]])
    assert record["outcome"] == "allow" and record["agency"] is None and record["session_policy_sha256"] is None
    assert record["issued_access_key"] == credential["access"] and record["duration"] <= 900
