"""``authmw policy validate`` and ``authmw policy check`` (SPEC §5 contract) over the conformance cases."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from authmw.cli import main
from tests.support.policy_cases import CASES, INVALID, refusal_of, states

REPORT_KEYS = {"decision", "explicit", "statement", "reason"}


def _write(tmp_path: Path, name: str, document: Any) -> str:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return str(path)


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    code = main(argv, stdout=out)
    return code, out.getvalue()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_check_gives_the_documented_decision(case: dict[str, Any], tmp_path: Path) -> None:
    argv = ["policy", "check", "--action", case["request"]["action"]]
    for index, policy in enumerate(case["policies"]):
        argv += ["--policy", _write(tmp_path, f"p{index}.json", policy)]
    if case["request"].get("resource"):
        argv += ["--resource", case["request"]["resource"]]
    if case["request"].get("context"):
        argv += ["--context", json.dumps(case["request"]["context"])]
    code, out = _run(argv)
    report = json.loads(out)
    assert set(report) == REPORT_KEYS
    assert report["decision"] == case["expected"], report["reason"]
    assert code == (0 if case["expected"] == "allow" else 1)
    if report["statement"] is not None:
        assert set(report["statement"]) == {"policy", "index"}
        assert report["statement"]["policy"].endswith(".json")


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c["id"])
def test_validate_refuses_invalid_policies(
    case: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "bad.json", case["policy"])
    code, _ = _run(["policy", "validate", path])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines
    assert all(line.startswith(f"{path}: ") for line in lines)
    refusal = refusal_of(case)
    assert any(states(line.removeprefix(f"{path}: "), refusal) for line in lines), (lines, refusal)


def test_validate_accepts_every_case_policy(tmp_path: Path) -> None:
    paths = [_write(tmp_path, f"{c['id']}-{i}.json", p) for c in CASES for i, p in enumerate(c["policies"])]
    code, out = _run(["policy", "validate", *paths, "--format", "json"])
    assert code == 0
    assert json.loads(out)["valid"] is True


def test_check_without_policies_is_implicit_deny() -> None:
    code, out = _run(["policy", "check", "--action", "modelarts:notebook:list"])
    assert code == 1
    assert json.loads(out) == {
        "decision": "deny",
        "explicit": False,
        "statement": None,
        "reason": "implicit deny: no statement allows",
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["policy", "check", "--action", "modelarts:notebook"],
        ["policy", "check", "--action", "a:b:c", "--context", "{not json"],
        ["policy", "check", "--action", "a:b:c", "--context", '["list"]'],
        ["policy", "check", "--action", "a:b:c", "--context", '{"k": {"nested": 1}}'],
        ["policy", "check", "--action", "a:b:c", "--policy", "/nonexistent.json"],
        ["policy", "check"],
        ["policy", "validate"],
    ],
    ids=[
        "two-segment-action",
        "bad-json",
        "context-not-object",
        "nested-context",
        "missing-file",
        "no-action",
        "no-file",
    ],
)
def test_invalid_input_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(argv)[0] == 2
    assert capsys.readouterr().err.startswith("authmw: ")


def test_check_with_invalid_policy_exits_2(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.json", {"Version": "1.1", "Statement": []})
    assert _run(["policy", "check", "--policy", path, "--action", "a:b:c"])[0] == 2
