"""``authmw explain --request 'METHOD /path'``: a whole request through the configured pipeline (route, action,
workspace, whitelists, conditions), for a user or an agency session, answered as the pipeline answers it."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from authmw.assembly import open_guard
from authmw.cli import main
from authmw.errors import AuthmwError
from authmw.models import Request
from authmw.settings import Settings
from authmw.signing import sign_request
from authmw.store import open_store
from tests.support.cli import fresh_store, run

MFA_ONLY = {
    "Version": "1.1",
    "Statement": [
        {"Effect": "Deny", "Action": ["modelarts:trainJob:delete"], "Condition": {"Bool": {"g:MFAPresent": ["false"]}}}
    ],
}
NO_DELETE = {"Version": "1.1", "Statement": [{"Effect": "Deny", "Action": ["modelarts:notebook:delete"]}]}
NOTEBOOKS = {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["modelarts:notebook:*"]}]}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A store: alice (developers: ModelArts CommonOperations; no notebook delete; no trainJob delete without MFA),
    a private workspace she is not granted, and an agency of ``default`` trusted by ``ops``, whose bob may
    assume it. Returns the project id."""
    for name, document in (("mfa-only", MFA_ONLY), ("no-delete", NO_DELETE), ("notebooks", NOTEBOOKS)):
        (tmp_path / f"{name}.json").write_text(json.dumps(document))
    fresh_store(
        tmp_path,
        monkeypatch,
        ["user", "create", "alice"],
        ["group", "create", "developers"],
        ["group", "add-user", "developers", "alice"],
        ["policy", "attach", "ModelArts CommonOperations", "--group", "developers"],
        ["policy", "create", "no-delete", "--file", str(tmp_path / "no-delete.json")],
        ["policy", "attach", "no-delete", "--user", "alice"],
        ["policy", "create", "mfa-only", "--file", str(tmp_path / "mfa-only.json")],
        ["policy", "attach", "mfa-only", "--user", "alice"],
        ["workspace", "create", "admins-only", "--auth-type", "PRIVATE"],
        ["domain", "create", "ops"],
        ["user", "create", "bob", "--domain", "ops"],
        ["user", "create", "eve", "--domain", "ops"],
        ["group", "create", "operators", "--domain", "ops"],
        ["group", "add-user", "operators", "bob", "--domain", "ops"],
        ["policy", "attach", "Agent Operator", "--group", "operators", "--domain", "ops"],
        ["policy", "create", "notebooks", "--file", str(tmp_path / "notebooks.json")],
        ["agency", "create", "helper", "--trust", "ops", "--policy", "notebooks"],
    )
    code, out = run("project", "create", "cn-north-4", "--region", "cn-north-4", "--format", "json")
    assert code == 0
    return str(json.loads(out)["id"])


def explain(*argv: str) -> tuple[int, dict[str, Any]]:
    code, out = run("explain", *argv, "--format", "json")
    return code, json.loads(out)


def test_a_request_is_placed_routed_and_decided(project: str) -> None:
    code, report = explain("--user", "alice", "--request", f"GET /v1/{project}/notebooks")
    assert code == 0
    assert report["decision"] == "allow" and report["error_code"] is None
    assert report["route"] == "GET /v1/{project_id}/notebooks" and report["action"] == "modelarts:notebook:list"
    assert report["workspace"] == "0" and report["project"] == project
    assert report["statement"] == {"policy": "ModelArts CommonOperations", "index": 0}
    assert report["conditions"]["g:username"] == "alice"


def test_a_denied_action_names_the_statement_and_the_resource(project: str) -> None:
    code, report = explain("--user", "alice", "--request", f"DELETE /v1/{project}/notebooks/nb-1")
    assert code == 1
    assert (report["decision"], report["status"], report["error_code"]) == ("deny", 403, "action_denied")
    assert report["explicit"] and report["statement"] == {"policy": "no-delete", "index": 0}
    assert report["action"] == "modelarts:notebook:delete"
    assert report["resource"] is not None and report["resource"].endswith(":notebook:nb-1")


def test_the_workspace_header_is_resolved_by_the_pipeline(project: str) -> None:
    code, report = explain("--user", "alice", "--request", f"GET /v1/{project}/notebooks", "--workspace", "admins-only")
    assert code == 1 and report["error_code"] == "workspace_denied"
    code, report = explain("--user", "alice", "--request", f"GET /v1/{project}/notebooks", "--workspace", "0")
    assert code == 0 and report["workspace"] == "0"
    code, report = explain("--user", "alice", "--request", f"GET /v1/{project}/notebooks", "--workspace", "f" * 32)
    assert code == 1 and report["error_code"] == "workspace_not_found"


def test_an_unmatched_route_is_refused_as_the_pipeline_refuses_it(project: str) -> None:
    code, report = explain("--user", "alice", "--request", f"GET /v1/{project}/no-such-thing")
    assert (code, report["error_code"], report["route"]) == (1, "route_not_allowed", None)


def test_conditions_read_the_source_ip_and_the_context(project: str) -> None:
    train = f"DELETE /v2/{project}/training-jobs/job-1"
    code, report = explain("--user", "alice", "--request", train)
    assert code == 1 and report["statement"] == {"policy": "mfa-only", "index": 0}  # g:MFAPresent is false
    code, report = explain("--user", "alice", "--request", train, "--context", "g:MFAPresent=true")
    assert code == 0 and report["statement"] == {"policy": "ModelArts CommonOperations", "index": 0}
    assert report["conditions"]["g:MFAPresent"] == "true" and "g:mfapresent" not in report["conditions"]
    code, report = explain("--user", "alice", "--request", train, "--context", '{"g:MFAPresent": true}')
    assert code == 0
    code, report = explain("--user", "alice", "--request", f"GET /v1/{project}/notebooks", "--source-ip", "10.9.8.7")
    assert code == 0 and report["conditions"]["g:sourceip"] == "10.9.8.7"


def test_a_whitelist_denial_is_reported_with_the_pipelines_code(project: str, tmp_path: Path) -> None:
    assert run("whitelist", "set", "--user", "alice", "192.0.2.0/24")[0] == 0
    path = f"/v1/{project}/notebooks"
    code, report = explain("--user", "alice", "--request", f"GET {path}", "--source-ip", "10.1.2.3")
    assert (code, report["status"], report["error_code"]) == (1, 403, "address_not_allowed")
    assert explain("--user", "alice", "--request", f"GET {path}", "--source-ip", "192.0.2.9")[0] == 0
    # The same request, signed with alice's own key and checked by the guard: the same answer.
    code, out = run("key", "create", "alice", "--format", "json")
    key = json.loads(out)
    store = open_store(os.environ["AUTHMW_STORE"])
    try:
        guard = open_guard(store, config=Settings())
        signed = sign_request("GET", "http://app.example" + path, {}, b"", access_key=key["access"],
                              secret_key=key["secret"])  # fmt: skip
        request = Request.build("GET", urlsplit(signed.url).path, signed.headers, b"", "10.1.2.3")
        with pytest.raises(AuthmwError) as refused:
            guard.check(request)
    finally:
        store.close()
    assert (refused.value.status, refused.value.code) == (report["status"], report["error_code"])


def test_an_agency_session_acts_with_exactly_the_agencys_policies(project: str) -> None:
    as_helper = ("--user", "bob", "--domain", "ops", "--agency", "default/helper")
    code, report = explain(*as_helper, "--request", f"DELETE /v1/{project}/notebooks/nb-1")
    assert code == 0 and report["statement"] == {"policy": "notebooks", "index": 0}
    assert report["agency"] == "default/helper"
    code, report = explain(*as_helper, "--request", f"DELETE /v2/{project}/training-jobs/job-1")
    assert code == 1 and report["error_code"] == "action_denied"  # only the agency's policies apply
    # eve is of the trusted domain but may not assume agencies: what the security-token endpoint answers.
    code, report = explain("--user", "eve", "--domain", "ops", "--agency", "default/helper", "--request",
                           f"GET /v1/{project}/notebooks")  # fmt: skip
    assert code == 1 and report["error_code"] == "action_denied" and "iam:agencies:assume" in report["reason"]
    code, report = explain("--user", "alice", "--agency", "helper", "--request", f"GET /v1/{project}/notebooks")
    assert code == 1 and report["error_code"] == "agency_not_trusted"


def test_the_text_form_says_the_same(project: str) -> None:
    code, out = run("explain", "--user", "alice", "--request", f"DELETE /v1/{project}/notebooks/nb-1")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("DENY  action_denied (403): modelarts:notebook:delete")
    assert "route:      DELETE /v1/{project_id}/notebooks/{id}" in lines
    assert "decided by: no-delete statement 0 (explicit)" in lines


def test_the_action_form_still_works_and_refuses_request_options(project: str) -> None:
    code, report = explain("--user", "alice", "--action", "modelarts:notebook:list")
    assert code == 0 and report["decision"] == "allow"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--request", "GET"], "expected 'METHOD /path"),
        (["--request", "get /x"], "expected 'METHOD /path"),
        (["--request", "GET /x", "--resource", "a:b:c:d:e"], "--resource goes with --action"),
        (["--request", "GET /x", "--header", "Authorization: x"], "--header"),
        (["--request", "GET /x", "--context", "novalue"], "--context: expected KEY=VALUE"),
        (["--request", "GET /x", "--agency", "default/"], "--agency"),
        (["--action", "a:b:c", "--source-ip", "10.0.0.1"], "--source-ip: only with --request"),
        (["--action", "a:b:c", "--request", "GET /x"], "not allowed with argument"),
        ([], "one of the arguments --action --request is required"),
    ],
)
def test_bad_input_is_exit_2(project: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    capsys.readouterr()
    assert main(["explain", "--user", "alice", *argv], stdout=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
