"""Agencies and temporary credentials over real HTTP: the ModelArts pattern through ``authmw proxy``.

A worker of the cloud service ``op_svc_modelarts`` (a domain of its own) logs in, assumes the agency that the
``default`` domain created for the service, and calls the API with the temporary AK/SK and security token,
signed by the real huaweicloudsdkcore client; the ASGI and WSGI forms sharing the store accept the same
credentials. Every refusal is checked by its exact code.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import jwt
import pytest

from authmw.assembly import session_sealer
from authmw.errors import ActionDenied, ExpiredToken, InvalidSessionPolicy
from authmw.models import AuthMethod, Credential, Request
from authmw.signing import sign_request
from authmw.sts import assume
from tests.support.agencies import (
    NOTEBOOK,
    NOTEBOOKS,
    PASSWORD,
    STS,
    TOKENS,
    TRAINING_JOB,
    call,
    login,
    request_credentials,
)
from tests.support.forms import FORMS, SETTINGS, Form, running
from tests.support.wire import huawei_call
from tests.support.world import World

NOTEBOOKS_ONLY = {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["modelarts:notebook:*"]}]}
GET_ONLY = {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["modelarts:notebook:get"]}]}
EVERYTHING = {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["modelarts:*:*"]}]}


@pytest.fixture(scope="module")
def proxy(world: World) -> Iterator[Form]:
    store = world.store
    store.create_domain("op_svc_modelarts")
    store.create_group("operators", domain="op_svc_modelarts")
    store.attach_policy("Agent Operator", group="operators", domain="op_svc_modelarts")
    for name, operator in (("worker", True), ("idle-worker", False)):
        store.create_user(name, domain="op_svc_modelarts", password=PASSWORD)
        if operator:
            store.add_user_to_group("operators", name, domain="op_svc_modelarts")
    store.create_policy("notebooks-only", json.dumps(NOTEBOOKS_ONLY))
    store.create_agency("modelarts_agency", trust="op_svc_modelarts", policies=["notebooks-only"], max_duration=3600)
    store.create_agency("for_others", trust="other", policies=["notebooks-only"])
    store.create_user("agent-user", password=PASSWORD)
    store.create_user("visitor", domain="other", password=PASSWORD)
    store.add_user_to_group("developers", "agent-user")
    with running("proxy", world) as form:
        yield form


@pytest.fixture(scope="module")
def forms(proxy: Form, world: World) -> Iterator[dict[str, Form]]:
    with running("asgi", world) as asgi_form, running("wsgi", world) as wsgi_form:
        yield {"proxy": proxy, "asgi": asgi_form, "wsgi": wsgi_form}


def assume_role(**params: Any) -> dict[str, Any]:
    policy = params.pop("policy", None)
    identity: dict[str, Any] = {
        "methods": ["assume_role"],
        "assume_role": {"domain_name": "default", "agency_name": "modelarts_agency", **params},
    }
    if policy is not None:
        identity["policy"] = policy
    return identity


def worker_credentials(form: Form, **params: Any) -> dict[str, str]:
    answer = request_credentials(form, login(form, "worker", "op_svc_modelarts"), assume_role(**params))
    assert answer.status_code == 201, answer.text
    return answer.json()["credential"]  # type: ignore[no-any-return]


def seconds_left(expires_at: str) -> float:
    return time.mktime(time.strptime(expires_at[:19], "%Y-%m-%dT%H:%M:%S")) - time.mktime(time.gmtime())


def test_a_worker_assumes_the_agency_and_acts_with_exactly_its_permissions(
    forms: dict[str, Form], world: World
) -> None:
    credential = worker_credentials(forms["proxy"], duration_seconds=1800)
    assert set(credential) == {"access", "secret", "securitytoken", "expires_at"}
    assert 1790 <= seconds_left(credential["expires_at"]) <= 1800
    for name in FORMS:
        form = forms[name]
        status, body = call(form, credential, NOTEBOOKS, world.project)
        assert status == 200, (name, body)
        assert form.facts(body) == {
            "user": "modelarts_agency",
            "workspace": "0",
            "action": "modelarts:notebook:list",
            "method": "temporary",
            "project": world.project,
            "agency": "modelarts_agency",
        }
        status, body = call(form, credential, TRAINING_JOB, world.project)  # the agency's policy stops here
        assert (status, body["error_code"]) == (403, "action_denied"), name
        status, body = call(form, credential, NOTEBOOKS, world.project, headers={"X-Workspace-Id": world.internal_ws})
        assert (status, body["error_code"]) == (403, "workspace_denied"), name  # not granted to the agency
        status, body = call(form, credential, NOTEBOOKS, world.other_project)
        assert (status, body["error_code"]) == (403, "project_not_found"), name  # the delegating domain only


def test_the_assertion_and_the_audit_log_show_the_delegation(
    proxy: Form, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    credential = worker_credentials(proxy)
    with caplog.at_level(logging.INFO, logger="authmw.audit"):
        status, body = call(proxy, credential, NOTEBOOKS, world.project)
    assert status == 200
    claims = jwt.decode(body["headers"]["x-authmw-assertion"], options={"verify_signature": False})
    assert claims["agency"] == "modelarts_agency" and claims["auth-method"] == "temporary"
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "authmw.audit"]
    record = next(r for r in records if r["access_key"] == credential["access"])
    assert record["agency"] == "modelarts_agency" and record["outcome"] == "allow"
    assert record["delegation"] == [
        "op_svc_modelarts/worker",
        "default/modelarts_agency",
        f"session/{credential['access']}",
    ]


def test_the_duration_defaults_to_900_and_is_capped_by_the_agency(proxy: Form) -> None:
    assert 890 <= seconds_left(worker_credentials(proxy)["expires_at"]) <= 900
    assert 3590 <= seconds_left(worker_credentials(proxy, duration_seconds=86400)["expires_at"]) <= 3600


@pytest.mark.parametrize("duration", [899, 86401, 0, -1, "900", 900.5, True, None])
def test_a_bad_duration_is_400(proxy: Form, duration: Any) -> None:
    token = login(proxy, "worker", "op_svc_modelarts")
    answer = request_credentials(proxy, token, assume_role(duration_seconds=duration))
    assert (answer.status_code, answer.json()["error_code"]) == (400, "invalid_duration")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"{}",
        b'{"auth": {"identity": {"methods": ["password"]}}}',
        b'{"auth": {"identity": {"methods": ["assume_role", "token"]}}}',
        b'{"auth": {"identity": {"methods": ["assume_role"], "assume_role": {"agency_name": "modelarts_agency"}}}}',
        b'{"auth": {"identity": {"methods": ["assume_role"], "assume_role": {"domain_name": "default"}}}}',
        b'{"auth": {"identity": {"methods": ["assume_role"], "assume_role": ["x"]}}}',
        b'{"auth": {"identity": {"methods": ["token"], "token": {"duration_seconds": 900}}, "x": 1}',
        b'{"auth":' + b"[" * 20_000,  # nested deeper than the JSON parser recurses
    ],
)
def test_a_malformed_request_is_400(proxy: Form, body: bytes) -> None:
    token = login(proxy, "worker", "op_svc_modelarts")
    answer = httpx.post(proxy.url + STS, content=body, headers={"X-Auth-Token": token})
    assert (answer.status_code, answer.json()["error_code"]) == (400, "malformed_body")


@pytest.mark.parametrize(
    "policy",
    [
        {"Version": "1.1"},
        {"Version": "9", "Statement": [{"Effect": "Allow", "Action": ["modelarts:*:*"]}]},
        {"Version": "1.1", "Statement": [{"Effect": "Maybe", "Action": ["modelarts:*:*"]}]},
        ["not", "an", "object"],
        {
            "Version": "1.1",
            "Statement": [{"Effect": "Allow", "Action": [f"modelarts:notebook:a{i}" for i in range(200)]}],
        },
    ],
)
def test_an_invalid_session_policy_is_400(proxy: Form, policy: Any) -> None:
    token = login(proxy, "worker", "op_svc_modelarts")
    answer = request_credentials(proxy, token, assume_role(policy=policy))
    assert (answer.status_code, answer.json()["error_code"]) == (400, "invalid_session_policy")


def test_the_session_policy_narrows_and_never_widens(proxy: Form, world: World) -> None:
    narrowed = worker_credentials(proxy, policy=GET_ONLY)
    assert call(proxy, narrowed, NOTEBOOK, world.project)[0] == 200
    status, body = call(proxy, narrowed, NOTEBOOKS, world.project)
    assert (status, body["error_code"]) == (403, "action_denied")
    wide = worker_credentials(proxy, policy=EVERYTHING)
    status, body = call(proxy, wide, TRAINING_JOB, world.project)
    assert (status, body["error_code"]) == (403, "action_denied")  # the agency's own policies still bound it


@pytest.mark.parametrize(
    ("user", "domain", "agency_domain", "agency", "code"),
    [
        ("visitor", "other", "default", "modelarts_agency", "agency_not_trusted"),  # another domain
        ("worker", "op_svc_modelarts", "default", "for_others", "agency_not_trusted"),  # trusts someone else
        ("worker", "op_svc_modelarts", "default", "no_such_agency", "agency_not_trusted"),
        ("worker", "op_svc_modelarts", "nowhere", "modelarts_agency", "agency_not_trusted"),
        ("idle-worker", "op_svc_modelarts", "default", "modelarts_agency", "action_denied"),  # no Agent Operator
    ],
)
def test_an_untrusted_caller_is_403(
    proxy: Form, user: str, domain: str, agency_domain: str, agency: str, code: str
) -> None:
    token = login(proxy, user, domain)
    answer = request_credentials(
        proxy,
        token,
        {"methods": ["assume_role"], "assume_role": {"domain_name": agency_domain, "agency_name": agency}},
    )
    assert (answer.status_code, answer.json()["error_code"]) == (403, code)


def test_the_agency_can_be_named_by_domain_id_and_xrole_name(proxy: Form) -> None:
    token = login(proxy, "worker", "op_svc_modelarts")
    domain_id = proxy.guard.identity.store.find_user("agent-user").domain_id  # type: ignore[attr-defined]
    answer = request_credentials(
        proxy,
        token,
        {"methods": ["assume_role"], "assume_role": {"domain_id": domain_id, "xrole_name": "modelarts_agency"}},
    )
    assert answer.status_code == 201


def test_no_caller_or_a_bad_token_is_401(proxy: Form) -> None:
    assert httpx.post(proxy.url + STS, json={"auth": {"identity": assume_role()}}).status_code == 401
    answer = request_credentials(proxy, "not-a-token", assume_role())
    assert (answer.status_code, answer.json()["error_code"]) == (401, "invalid_token")


def test_the_token_method_acts_as_the_caller(forms: dict[str, Form], world: World) -> None:
    proxy = forms["proxy"]
    token = login(proxy, "agent-user", "default", world.project)
    answer = request_credentials(proxy, token, {"methods": ["token"]})
    assert answer.status_code == 201, answer.text
    credential = answer.json()["credential"]
    for name in FORMS:
        status, body = call(forms[name], credential, NOTEBOOKS, world.project)
        assert status == 200, (name, body)
        facts = forms[name].facts(body)
        assert (facts["user"], facts["method"], facts["agency"]) == ("agent-user", "temporary", None)
    narrowed = request_credentials(proxy, token, {"methods": ["token"], "policy": GET_ONLY}).json()["credential"]
    status, body = call(proxy, narrowed, NOTEBOOKS, world.project)
    assert (status, body["error_code"]) == (403, "action_denied")


def test_a_permanent_key_may_ask_but_temporary_credentials_may_not(proxy: Form, world: World) -> None:
    body = json.dumps({"auth": {"identity": {"methods": ["token"], "token": {"duration_seconds": 900}}}})
    status, answer = huawei_call(
        proxy.url, method="POST", path=STS, ak=world.scientist.access, sk=world.scientist.secret, body=body
    )
    assert status == 201, answer
    credential = answer["credential"]
    status, answer = call(proxy, credential, STS, world.project, method="POST", body=body)
    assert (status, answer["error_code"]) == (403, "action_denied")


def test_missing_tampered_mismatched_and_expired_security_tokens(forms: dict[str, Form], world: World) -> None:
    first, second = worker_credentials(forms["proxy"]), worker_credentials(forms["proxy"])
    token = first["securitytoken"]
    tampered = token[:-8] + ("A" * 8 if not token.endswith("A" * 8) else "B" * 8)
    sealer = session_sealer(world.store)
    principal = world.store.principal(world.store.find_user("worker", domain="op_svc_modelarts").id)
    assert principal is not None
    _session, expired = assume(  # issued 2 hours ago for 15 minutes: an injected clock
        world.store, sealer, principal, agency=("default", "modelarts_agency"), clock=lambda: time.time() - 7200
    )
    cases = [
        ({"securitytoken": None}, 401, "security_token_required"),  # a temporary AK without its token
        ({"securitytoken": tampered}, 401, "invalid_security_token"),
        ({"securitytoken": "v1.0000.AAAA"}, 401, "invalid_security_token"),
        ({"securitytoken": second["securitytoken"]}, 401, "security_token_mismatch"),  # signed with first's key
        ({"securitytoken": expired}, 401, "security_token_expired"),
    ]
    for name in FORMS:
        for change, status, code in cases:
            answer = call(forms[name], {**first, **change}, NOTEBOOKS, world.project)
            assert answer[0] == status and answer[1]["error_code"] == code, (name, change, answer)


def test_security_tokens_survive_a_sealing_key_rotation(forms: dict[str, Form], world: World) -> None:
    before = worker_credentials(forms["proxy"])
    world.store.rotate_sealing_key()
    worker = world.store.principal(world.store.find_user("worker", domain="op_svc_modelarts").id)
    assert worker is not None
    # Another process seals with the new key at once; the running forms have never seen its kid.
    session, token = assume(world.store, session_sealer(world.store), worker, agency=("default", "modelarts_agency"))
    assert before["securitytoken"].split(".")[1] != token.split(".")[1]
    after = {"access": session.access_key, "secret": session.secret_key, "securitytoken": token}
    time.sleep(0.3)  # the forms see the store change within their revision poll (0.25 s), then reload for it
    for name in FORMS:
        assert call(forms[name], before, NOTEBOOKS, world.project)[0] == 200, name  # the retired key still opens
        assert call(forms[name], after, NOTEBOOKS, world.project)[0] == 200, name  # the new kid: keys reloaded


def test_token_method_credentials_keep_the_token_scope_and_die_with_it(proxy: Form, world: World) -> None:
    scoped = login(proxy, "agent-user", "default")  # domain-scoped: no project may be named with it
    body = {"auth": {"identity": {"methods": ["token"]}}}
    domain_scoped = httpx.post(proxy.url + STS, json=body, headers={"X-Auth-Token": scoped}).json()["credential"]
    status, answer = call(proxy, domain_scoped, NOTEBOOKS, world.project)
    assert (status, answer["error_code"]) == (403, "token_scope_mismatch")
    token = login(proxy, "agent-user", "default", world.project)
    credential = httpx.post(proxy.url + STS, json=body, headers={"X-Auth-Token": token}).json()["credential"]
    assert call(proxy, credential, NOTEBOOKS, world.project)[0] == 200
    status, answer = call(proxy, credential, NOTEBOOKS, world.other_project)
    assert (status, answer["error_code"]) == (403, "token_scope_mismatch")
    revoked = httpx.delete(proxy.url + TOKENS, headers={"X-Auth-Token": token, "X-Subject-Token": token})
    assert revoked.status_code == 204
    time.sleep(0.3)  # the store's refresh
    status, answer = call(proxy, credential, NOTEBOOKS, world.project)
    assert (status, answer["error_code"]) == (401, "invalid_security_token")


def test_agency_credentials_follow_their_caller(proxy: Form, world: World) -> None:
    store = world.store
    store.create_user("shift-worker", domain="op_svc_modelarts", password=PASSWORD)
    store.add_user_to_group("operators", "shift-worker", domain="op_svc_modelarts")
    token = login(proxy, "shift-worker", "op_svc_modelarts")
    credential = request_credentials(proxy, token, assume_role()).json()["credential"]
    assert call(proxy, credential, NOTEBOOKS, world.project)[0] == 200
    store.set_whitelist("user", "shift-worker", ["192.0.2.0/24"], domain="op_svc_modelarts")
    time.sleep(0.3)
    status, answer = call(proxy, credential, NOTEBOOKS, world.project)  # the caller's whitelist still applies
    assert (status, answer["error_code"]) == (403, "address_not_allowed")
    answer = request_credentials(proxy, token, assume_role())  # and at the endpoint
    assert (answer.status_code, answer.json()["error_code"]) == (403, "address_not_allowed")
    store.set_whitelist("user", "shift-worker", [], domain="op_svc_modelarts")
    store.set_user_enabled("shift-worker", False, domain="op_svc_modelarts")
    time.sleep(0.3)
    status, answer = call(proxy, credential, NOTEBOOKS, world.project)  # a disabled caller's sessions end
    assert (status, answer["error_code"]) == (401, "invalid_security_token")


def test_the_assume_decision_sees_the_time(proxy: Form, world: World) -> None:
    store = world.store
    store.create_user("night-worker", domain="op_svc_modelarts", password=PASSWORD)
    store.add_user_to_group("operators", "night-worker", domain="op_svc_modelarts")
    not_after_2020 = {
        "Version": "1.1",
        "Statement": [
            {
                "Effect": "Deny",
                "Action": ["iam:agencies:assume"],
                "Condition": {"DateGreaterThan": {"g:CurrentTime": ["2020-01-01T00:00:00Z"]}},
            }
        ],
    }
    store.create_policy("no-assume-after-2020", json.dumps(not_after_2020), domain="op_svc_modelarts")
    store.attach_policy("no-assume-after-2020", user="night-worker", domain="op_svc_modelarts")
    answer = request_credentials(proxy, login(proxy, "night-worker", "op_svc_modelarts"), assume_role())
    assert (answer.status_code, answer.json()["error_code"]) == (403, "action_denied")


def test_an_unsigned_body_cannot_ask_for_credentials(proxy: Form, world: World) -> None:
    body = json.dumps({"auth": {"identity": {"methods": ["token"], "token": {"duration_seconds": 86400}}}})
    signed = sign_request(
        "POST",
        proxy.url + STS,
        {"Content-Type": "application/json"},
        body.encode(),
        access_key=world.scientist.access,
        secret_key=world.scientist.secret,
        unsigned_payload=True,
    )
    answer = httpx.post(signed.url, content=signed.body, headers=signed.headers)
    assert (answer.status_code, answer.json()["error_code"]) == (401, "unsigned_payload_refused")


def test_allowed_actions_are_not_shared_between_a_user_and_an_agency_with_no_policies(
    proxy: Form, world: World
) -> None:
    world.store.create_agency("empty_agency", trust="op_svc_modelarts")  # no policies at all
    settings = replace(SETTINGS, default_allow_without_policies=True)  # the legacy rule, for users only
    with running("proxy", world, settings) as legacy:
        status, body = huawei_call(
            legacy.url, method="GET", path=NOTEBOOKS, ak=world.outsider.access, sk=world.outsider.secret,
            project_id=world.project,
        )  # fmt: skip
        assert status == 200  # outsider has no policy: the legacy rule allows ModelArts
        assert "modelarts:notebook:list" in body["headers"]["x-authmw-allowed-actions"]
        credential = worker_credentials(legacy, agency_name="empty_agency")
        status, body = call(legacy, credential, NOTEBOOKS, world.project)
        assert (status, body["error_code"]) == (403, "action_denied")  # an agency has exactly its policies
        path = NOTEBOOKS.replace("{project_id}", world.project)
        signed = sign_request(
            "GET", f"http://h{path}", {}, b"", access_key=credential["access"], secret_key=credential["secret"],
            security_token=credential["securitytoken"],
        )  # fmt: skip
        with pytest.raises(ActionDenied) as refused:  # the same empty policy set as outsider's: not its actions
            legacy.guard.check(Request.build("GET", path, list(signed.headers.items()), b""))
        assert refused.value.context is not None and refused.value.context.allowed_actions == ()
        narrowed = worker_credentials(legacy, agency_name="modelarts_agency")
        status, body = call(legacy, narrowed, NOTEBOOKS, world.project)
        assert status == 200
        allowed = body["headers"]["x-authmw-allowed-actions"].split(",")
        assert allowed and all(action.startswith("modelarts:notebook:") for action in allowed)


def test_credentials_asked_with_an_access_key_end_with_it(proxy: Form, world: World) -> None:
    key = world.store.create_access_key("agent-user")
    body = json.dumps({"auth": {"identity": {"methods": ["token"]}}})
    status, answer = huawei_call(proxy.url, method="POST", path=STS, ak=key.access, sk=key.secret, body=body)
    assert status == 201, answer
    credential = answer["credential"]
    assert call(proxy, credential, NOTEBOOKS, world.project)[0] == 200
    world.store.set_access_key_status(key.access, False)
    time.sleep(0.3)
    status, answer = call(proxy, credential, NOTEBOOKS, world.project)
    assert (status, answer["error_code"]) == (401, "invalid_security_token")


def test_an_agency_of_the_callers_own_domain_keeps_the_token_scope(proxy: Form, world: World) -> None:
    world.store.create_agency("self_agency", trust="default", policies=["notebooks-only"])
    world.store.create_user("self-assumer", password=PASSWORD)
    world.store.attach_policy("Agent Operator", user="self-assumer")
    token = login(proxy, "self-assumer", "default", world.project)
    answer = request_credentials(proxy, token, assume_role(agency_name="self_agency"))
    assert answer.status_code == 201, answer.text
    credential = answer.json()["credential"]
    assert call(proxy, credential, NOTEBOOKS, world.project)[0] == 200
    world.store.create_project("eu-west-0", region="eu-west-0")
    other = world.store.find_project("eu-west-0").id
    status, answer = call(proxy, credential, NOTEBOOKS, other)
    assert (status, answer["error_code"]) == (403, "token_scope_mismatch")


@pytest.mark.parametrize(
    "identity",
    [
        {"methods": ["assume_role"], "assume_role": {"domain_name": "\ud800", "agency_name": "modelarts_agency"}},
        {"methods": ["assume_role"], "assume_role": {"domain_name": "default", "agency_name": "a\udfff"}},
    ],
)
def test_lone_surrogates_are_a_malformed_body(proxy: Form, identity: dict[str, Any]) -> None:
    token = login(proxy, "worker", "op_svc_modelarts")
    body = json.dumps({"auth": {"identity": identity}})  # ASCII JSON with \\ud800-style escapes
    answer = httpx.post(proxy.url + STS, content=body, headers={"X-Auth-Token": token})
    assert (answer.status_code, answer.json()["error_code"]) == (400, "malformed_body")
    password = json.dumps(
        {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": "\ud800", "password": "x", "domain": {"name": "default"}}},
                }
            }
        }
    )
    answer = httpx.post(proxy.url + TOKENS, content=password)
    assert (answer.status_code, answer.json()["error_code"]) == (400, "malformed_body")


@pytest.mark.usefixtures("proxy")  # it creates the worker
def test_assume_refuses_a_deep_policy_and_a_token_already_past_its_expiry(world: World) -> None:
    worker = world.store.principal(world.store.find_user("worker", domain="op_svc_modelarts").id)
    assert worker is not None
    sealer = session_sealer(world.store)
    deep = '{"Version": "1.1", "Statement": ' + "[" * 900 + "]" * 900 + "}"
    with pytest.raises(InvalidSessionPolicy):
        assume(world.store, sealer, worker, policy=deep)
    within_leeway = Credential(AuthMethod.TOKEN, "token", "a" * 32, worker.user_id, 0, expires_at=int(time.time()) - 5)
    with pytest.raises(ExpiredToken):
        assume(world.store, sealer, worker, caller=within_leeway)
