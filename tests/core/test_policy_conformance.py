"""Every documented policy case decides as expected; every invalid policy is refused with a precise rule."""

from __future__ import annotations

from typing import Any

import pytest

from authmw.errors import InvalidPolicy
from authmw.policy import PolicySet, parse_policy
from tests.support.policy_cases import CASES, INVALID, REFUSALS, refusal_of, states


def _policy_set(case: dict[str, Any], **options: Any) -> PolicySet:
    return PolicySet([parse_policy(p, name=f"policy-{i}") for i, p in enumerate(case["policies"])], **options)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_case_decides_as_documented(case: dict[str, Any]) -> None:
    request = case["request"]
    decision = _policy_set(case).decide(request["action"], request.get("resource"), request.get("context"))
    assert ("allow" if decision.allowed else "deny") == case["expected"], decision.reason
    if decision.allowed or decision.explicit:
        assert decision.policy is not None
        assert decision.statement is not None
        statement = case["policies"][int(decision.policy.rsplit("-", 1)[1])]["Statement"][decision.statement]
        assert statement["Effect"].lower() == ("allow" if decision.allowed else "deny")
    else:
        assert decision.policy is None
        assert decision.reason.startswith("implicit deny: no statement allows")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_cached_decision_equals_fresh_one(case: dict[str, Any]) -> None:
    request = case["request"]
    cached = _policy_set(case)
    first = cached.decide(request["action"], request.get("resource"), request.get("context"))
    again = cached.decide(request["action"], request.get("resource"), request.get("context"))
    assert first == again
    fresh = _policy_set(case, cache_size=0).decide(request["action"], request.get("resource"), request.get("context"))
    assert fresh == first


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c["id"])
def test_invalid_policy_is_refused(case: dict[str, Any]) -> None:
    with pytest.raises(InvalidPolicy) as raised:
        parse_policy(case["policy"], name=case["id"])
    refusal = refusal_of(case)
    # One problem, naming the documented field and rule: the case breaks exactly one rule.
    assert len(raised.value.problems) == 1, raised.value.problems
    assert states(raised.value.problems[0], refusal), (raised.value.problems, refusal)


def test_cases_are_present() -> None:
    assert len(CASES) >= 60
    assert len(INVALID) >= 20
    assert set(REFUSALS) == {case["id"] for case in INVALID}  # every invalid case's reason is pinned, no stale one
