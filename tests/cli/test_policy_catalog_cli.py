"""``policy validate``, ``policy create`` and ``policy lint`` warn about statements that can never apply to the
route catalog they are used with (of ``--config``; default: the ModelArts preset), without changing exit codes.

Which actions have a resource is read from the catalog at run time: a route that gains a resource URN (the
preset's TSV, or a configured route) silences the warning with no change here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import fresh_store, run

TASK_DELETE = "modelarts:processTask:deleteProcessTask"
#: A Deny scoped to one labelling task: the preset's process-task routes name no resource (ModelArts documents no
#: resource type for them), so it denies nothing. (Notebook routes carry URNs: a Deny on one notebook applies.)
DENY_ONE_TASK = {
    "Version": "1.1",
    "Statement": [
        {"Effect": "Allow", "Action": ["modelarts:processTask:*"]},
        {"Effect": "Deny", "Action": [TASK_DELETE], "Resource": ["modelarts:*:*:processTask:t-1"]},
    ],
}
PLAIN = {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["modelarts:notebook:*"]}]}
DENY_ONE_NOTEBOOK = {
    "Version": "1.1",
    "Statement": [
        {"Effect": "Allow", "Action": ["modelarts:notebook:*"]},
        {"Effect": "Deny", "Action": ["modelarts:notebook:delete"], "Resource": ["modelarts:*:*:notebook:nb-1"]},
    ],
}
REPORTS = {
    "Version": "1.1",
    "Statement": [
        {"Effect": "Allow", "Action": ["reports:report:get", "reports:report:list"]},
        {"Effect": "Deny", "Action": ["reports:report:get"], "Resource": ["reports:*:*:report:42"]},
        {"Effect": "Deny", "Action": ["reports:report:list"], "Resource": ["reports:*:*:report:*"]},
        {"Effect": "Deny", "Action": ["reports:archive:*"]},
    ],
}


def _file(tmp_path: Path, name: str, content: Any) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def _config(tmp_path: Path) -> str:
    """Routes of an app: ``get`` names a resource, ``list`` does not."""
    return _file(
        tmp_path,
        "authmw.yaml",
        "routes:\n"
        "  - {method: GET, path: '/reports/{id}', action: reports:report:get, resource: 'reports:*:*:report:{id}'}\n"
        "  - {method: GET, path: /reports, action: reports:report:list}\n",
    )


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": warning: " in line]


def test_validate_warns_on_stderr_and_keeps_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _file(tmp_path, "deny.json", DENY_ONE_TASK)
    code, out = run("policy", "validate", path)
    assert (code, out) == (0, f"{path}: valid\n")
    assert _warnings(capsys.readouterr().err) == [
        f"{path}: warning: statement 1: this Deny never applies: it has a Resource, but no route of the catalog "
        f"gives its actions ({TASK_DELETE.lower()}) a resource"
    ]
    code, out = run("policy", "validate", path, "--format", "json")
    assert code == 0 and json.loads(out) == {"valid": True, "problems": {path: []}}
    assert len(_warnings(capsys.readouterr().err)) == 1


def test_validate_is_quiet_about_statements_that_apply(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("policy", "validate", _file(tmp_path, "plain.json", PLAIN))[0] == 0
    assert run("policy", "validate", _file(tmp_path, "nb.json", DENY_ONE_NOTEBOOK))[0] == 0  # notebooks have URNs
    assert capsys.readouterr().err == ""


def test_an_invalid_policy_still_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = {**DENY_ONE_TASK, "Version": "1.0"}
    assert run("policy", "validate", _file(tmp_path, "bad.json", bad))[0] == 2
    assert _warnings(capsys.readouterr().err) == []


def test_the_configured_catalog_decides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _file(tmp_path, "reports.json", REPORTS)
    assert run("policy", "validate", path, "--config", _config(tmp_path))[0] == 0
    assert _warnings(capsys.readouterr().err) == [
        f"{path}: warning: statement 2: this Deny never applies: it has a Resource, but no route of the catalog "
        "gives its actions (reports:report:list) a resource",
        f"{path}: warning: statement 3: this Deny never applies: no action of the route catalog matches its Action",
    ]
    # Against the default catalog (ModelArts), none of these actions exist.
    assert run("policy", "validate", path)[0] == 0
    assert len(_warnings(capsys.readouterr().err)) == 4


def test_an_unreadable_config_leaves_the_check_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _file(tmp_path, "deny.json", DENY_ONE_TASK)
    assert run("policy", "validate", path, "--config", str(tmp_path / "missing.yaml"))[0] == 0
    err = capsys.readouterr().err
    assert "whether statements can apply is not checked" in err and _warnings(err) == []


def test_create_warns_and_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh_store(tmp_path, monkeypatch)
    capsys.readouterr()
    code, out = run("policy", "create", "one-task", "--file", _file(tmp_path, "deny.json", DENY_ONE_TASK))
    assert code == 0 and "one-task" in out
    assert _warnings(capsys.readouterr().err) == [
        "policy 'one-task': warning: statement 1: this Deny never applies: it has a Resource, but no route "
        f"of the catalog gives its actions ({TASK_DELETE.lower()}) a resource"
    ]
    assert run("policy", "create", "plain", "--file", _file(tmp_path, "plain.json", PLAIN))[0] == 0
    assert capsys.readouterr().err == ""


def test_lint_reports_them_with_its_other_warnings(tmp_path: Path) -> None:
    path = _file(tmp_path, "reports.json", REPORTS)
    code, out = run("policy", "lint", path, "--config", _config(tmp_path), "--format", "json")
    assert code == 1  # lint's convention: warnings exit 1
    messages = {(w["statement"], w["message"].split(":")[0]) for w in json.loads(out)["warnings"]}
    assert messages == {(2, "this Deny never applies"), (3, "this Deny never applies")}
    code, _ = run(
        "policy",
        "lint",
        _file(tmp_path, "get.json", {**REPORTS, "Statement": REPORTS["Statement"][:2]}),
        "--config",
        _config(tmp_path),
    )
    assert code == 0  # a Deny on a route with a resource applies: nothing to say


def test_lint_lists_the_inferred_actions_of_the_preset_a_policy_relies_on(tmp_path: Path) -> None:
    # modelarts:authMode:* matches only actions the generator inferred (no documentation names them); the
    # documented notebook actions and the service-wide wildcard rely on no one inferred action.
    relying = {
        "Version": "1.1",
        "Statement": [
            {"Effect": "Allow", "Action": ["modelarts:authMode:*", "modelarts:notebook:*"]},
            {"Effect": "Allow", "Action": ["modelarts:devserver:reboot", "modelarts:*:*"]},
        ],
    }
    code, out = run("policy", "lint", _file(tmp_path, "relying.json", relying), "--format", "json")
    found = [(w["statement"], w["message"]) for w in json.loads(out)["warnings"]]
    assert code == 1 and [(s, m.split(" relies")[0]) for s, m in found] == [
        (0, "Action modelarts:authmode:*"),  # actions compare (and print) in lower case
        (1, "Action modelarts:devserver:reboot"),
    ]
    assert "modelarts:authmode:update" in found[0][1] and "no ModelArts documentation names them" in found[0][1]
    assert run("policy", "lint", _file(tmp_path, "plain.json", PLAIN))[0] == 0
