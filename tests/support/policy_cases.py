"""The policy conformance cases of tests/data/conformance/policy, and how authmw states the documented reason of
each invalid one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.support.vectors import DATA

POLICY_CASES: dict[str, Any] = json.loads((DATA / "conformance" / "policy" / "policy_cases.json").read_text())
CASES: list[dict[str, Any]] = POLICY_CASES["cases"]
INVALID: list[dict[str, Any]] = POLICY_CASES["invalid_policies"]


@dataclass(frozen=True)
class Refusal:
    """How authmw states the documented reason of an invalid case: the problem is ``"<location>: <text>"``,
    where ``location`` is the field that breaks the rule and ``text`` contains ``rule``; ``documented`` is the
    words of the case's own ``reason`` that name that rule (so the table cannot drift from the data)."""

    location: str
    rule: str
    documented: str


_CONDITION = "Statement[0].Condition.StringEquals"
# The conformance data documents each invalid case by a prose ``reason`` (and the Huawei IAM error it mirrors in
# ``source``), not by a machine-readable rule: this table pins, per case, the field and the rule authmw names.
REFUSALS: dict[str, Refusal] = {
    "BAD-001-version-1.0-custom": Refusal("Version", "'1.0' is not allowed", "1.0 is reserved"),
    "BAD-002-version-missing": Refusal("Version", "missing", "Version is mandatory"),
    "BAD-003-statement-not-array": Refusal("Statement", "must be a JSON array", "Statement must be a JSON array"),
    "BAD-004-statement-empty": Refusal("Statement", "0 statements, 1 to 8 required", "1 to 8 statements"),
    "BAD-006-effect-invalid": Refusal("Statement[0].Effect", "is not Allow or Deny", "Effect must be allow or deny"),
    "BAD-007-effect-missing": Refusal("Statement[0].Effect", "missing", "Effect is mandatory"),
    "BAD-009-action-and-notaction": Refusal(
        "Statement[0]", "Action and NotAction cannot both be set", "Action and NotAction cannot both be set"
    ),
    "BAD-010-no-action": Refusal("Statement[0]", "Action (or NotAction) is required", "needs Action (or NotAction)"),
    "BAD-013-action-invalid-chars": Refusal("Statement[0].Action[0]", "has invalid characters", "invalid characters"),
    "BAD-014-action-two-segments": Refusal(
        "Statement[0].Action[0]", "must have three segments", "three colon-separated segments"
    ),
    "BAD-018-resource-too-many": Refusal("Statement[0].Resource", "21 entries, 1 to 20 required", "More than 20"),
    "BAD-019-resource-too-long": Refusal("Statement[0].Resource[0]", "longer than 1500 characters", "1,500"),
    "BAD-020-resource-missing-region-segment": Refusal(
        "Statement[0].Resource[0]", "service:region:account:type:path", "service:region:account:type:path"
    ),
    "BAD-022-condition-values-empty": Refusal(f"{_CONDITION}.g:UserName", "0 entries, 1 to 10 required", "1 to 10"),
    "BAD-023-condition-eleven-values": Refusal(
        f"{_CONDITION}.g:UserName", "11 entries, 1 to 10 required", "More than 10 values"
    ),
    "BAD-024-condition-operator-null": Refusal(_CONDITION, "must not be null", "Operator value cannot be null"),
    "BAD-026-condition-value-too-long": Refusal(f"{_CONDITION}.g:UserName", "longer than 1024 characters", "1,024"),
    "BAD-027-key-operator-mismatch": Refusal(
        "Statement[0].Condition.IpAddress.g:UserName", "does not fit the ip operator", "does not match the operator"
    ),
    "BAD-028-unknown-operator": Refusal(
        "Statement[0].Condition.StringSoundsLike", "unknown condition operator", "Unknown condition operator"
    ),
    "BAD-029-unknown-statement-key": Refusal("Statement[0]", "unknown key 'Principal'", "Unknown key"),
    "BAD-031-policy-too-large": Refusal("policy", "at most 6144 allowed", "exceeds 6,144 characters"),
    "BAD-033-not-json": Refusal("not valid JSON", "Expecting ',' delimiter", "Not valid JSON"),
}


def refusal_of(case: dict[str, Any]) -> Refusal:
    """The documented refusal of an invalid case; a new case fails here until its reason is pinned above."""
    refusal = REFUSALS[case["id"]]
    assert refusal.documented.casefold() in case["reason"].casefold(), (refusal, case["reason"])
    return refusal


def states(problem: str, refusal: Refusal) -> bool:
    """Whether ``problem`` names the refusal's field and rule."""
    location, _, text = problem.partition(": ")
    return location == refusal.location and refusal.rule in text
