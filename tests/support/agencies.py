"""Logging in, asking the STS endpoint for temporary credentials and calling with them, over real HTTP
(tests/pipeline/test_agencies.py and the session-policy tests built on it)."""

from __future__ import annotations

import os
from typing import Any

import httpx

from tests.support.forms import Form
from tests.support.wire import huawei_call

PASSWORD = "correct horse battery staple"
TOKENS = "/v3/auth/tokens"
STS = "/v3.0/OS-CREDENTIAL/securitytokens"
NOTEBOOKS = "/v1/{project_id}/notebooks"
NOTEBOOK = "/v1/{project_id}/notebooks/nb-1"
TRAINING_JOB = "/v2/{project_id}/training-jobs/job-1"


def login(form: Form, user: str, domain: str, project: str | None = None) -> str:
    body: dict[str, Any] = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": user, "password": PASSWORD, "domain": {"name": domain}}},
            }
        }
    }
    if project is not None:
        body["auth"]["scope"] = {"project": {"id": project}}
    answer = httpx.post(form.url + TOKENS, json=body, timeout=30)
    assert answer.status_code == 201, answer.text
    return answer.headers["x-subject-token"]


def request_credentials(form: Form, token: str, identity: dict[str, Any]) -> httpx.Response:
    return httpx.post(form.url + STS, json={"auth": {"identity": identity}}, headers={"X-Auth-Token": token})


def call(form: Form, credential: dict[str, str], path: str, project: str, **kwargs: Any) -> tuple[int, Any]:
    kwargs.setdefault("security_token", credential.get("securitytoken"))
    # A signed nonce, as a client sending identical requests within one second must add: the forms are shared
    # by many tests, and the second of two identical requests would be refused as a replay.
    kwargs["headers"] = {"X-Nonce": os.urandom(8).hex(), **(kwargs.get("headers") or {})}
    return huawei_call(  # type: ignore[no-any-return]
        form.url,
        method=kwargs.pop("method", "GET"),
        path=path,
        ak=credential["access"],
        sk=credential["secret"],
        project_id=project,
        **kwargs,
    )
