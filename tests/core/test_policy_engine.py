"""The compiled policy engine: explanations, session policies, legacy default, cache, index, builtins, lint."""

from __future__ import annotations

from typing import Any

import pytest

from authmw.errors import InvalidPolicy
from authmw.policy import PolicySet, RouteUse, lint, modelarts_actions, never_applies, parse_policy, system_policies
from authmw.policy.lint import relies_on_inferred


def policy(*statements: dict[str, Any], version: str = "1.1", name: str = "p") -> Any:
    return parse_policy({"Version": version, "Statement": list(statements)}, name=name)


def allow(*actions: str, **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": list(actions), **extra}


def deny(*actions: str, **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": list(actions), **extra}


class FakeTimer:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_decisions_name_the_deciding_statement() -> None:
    rules = PolicySet([policy(allow("modelarts:notebook:*"), deny("modelarts:notebook:delete"), name="dev")])
    allowed = rules.decide("modelarts:notebook:create")
    assert (allowed.allowed, allowed.explicit, allowed.policy, allowed.statement) == (True, False, "dev", 0)
    denied = rules.decide("modelarts:notebook:delete")
    assert (denied.allowed, denied.explicit, denied.policy, denied.statement) == (False, True, "dev", 1)
    assert denied.reason == "explicit deny by policy 'dev' statement 1"


def test_implicit_deny_explains_the_failed_condition() -> None:
    condition = {"StringEquals": {"g:UserName": ["alice"]}}
    rules = PolicySet([policy(allow("modelarts:notebook:list", Condition=condition))])
    decision = rules.decide("modelarts:notebook:list", context={"g:UserName": "bob"})
    assert not decision.allowed
    assert decision.reason.startswith("implicit deny: no statement allows")
    assert "StringEquals g:username: expected ['alice'], got 'bob'" in decision.reason
    assert "got absent" in rules.decide("modelarts:notebook:list").reason


def test_sid_appears_in_explanations() -> None:
    rules = PolicySet([policy(allow("modelarts:*:*", Sid="AllModelArts"), version="5.0")])
    assert "(AllModelArts)" in rules.decide("modelarts:model:get").reason


def test_session_policy_intersects() -> None:
    agency = PolicySet([policy(allow("modelarts:*:*"))])
    session = PolicySet([policy(allow("modelarts:notebook:*"))])
    assert agency.decide("modelarts:notebook:list", session=session).allowed
    narrowed = agency.decide("modelarts:trainJob:create", session=session)
    assert not narrowed.allowed
    assert narrowed.reason.startswith("session policy: implicit deny")
    assert not PolicySet([]).decide("modelarts:notebook:list", session=session).allowed


def test_modelarts_legacy_default_is_opt_in() -> None:
    assert not PolicySet([]).decide("modelarts:notebook:list").allowed
    legacy = PolicySet([], default_allow_without_policies=True)
    assert legacy.decide("modelarts:notebook:list").allowed
    assert not legacy.decide("obs:bucket:ListBucket").allowed
    with_policy = PolicySet([policy(allow("obs:*:*"))], default_allow_without_policies=True)
    assert not with_policy.decide("modelarts:notebook:list").allowed  # only when no policy at all


def test_cache_counts_hits_and_keys_only_what_the_decision_reads() -> None:
    condition = {"StringEquals": {"g:UserName": ["alice"]}}
    rules = PolicySet([policy(allow("modelarts:notebook:list", Condition=condition))])
    context = {"g:UserName": "alice", "g:SourceIp": "10.0.0.1"}
    assert rules.decide("modelarts:notebook:list", context=context).allowed
    assert rules.decide("modelarts:notebook:list", context={**context, "g:SourceIp": "10.0.0.2"}).allowed
    assert (rules.hits, rules.misses) == (1, 1)  # g:SourceIp is not read: same cache entry
    assert not rules.decide("modelarts:notebook:list", context={"G:USERNAME": "bob"}).allowed
    assert rules.misses == 2


def test_decisions_reading_the_current_time_are_never_cached() -> None:
    window = {"DateLessThan": {"g:CurrentTime": ["2026-01-01T00:00:00Z"]}}
    rules = PolicySet([policy(allow("modelarts:notebook:list", Condition=window))])
    assert rules.decide("modelarts:notebook:list", context={"g:CurrentTime": "2025-12-31T23:59:59Z"}).allowed
    assert not rules.decide("modelarts:notebook:list", context={"g:CurrentTime": "2026-01-01T00:00:01Z"}).allowed
    assert (rules.hits, rules.misses) == (0, 0)


def test_cache_entries_expire_on_the_injected_timer() -> None:
    timer = FakeTimer()
    rules = PolicySet([policy(allow("modelarts:notebook:list"))], ttl=10, timer=timer)
    rules.decide("modelarts:notebook:list")
    rules.decide("modelarts:notebook:list")
    timer.now = 11
    rules.decide("modelarts:notebook:list")
    assert (rules.hits, rules.misses) == (1, 2)


def test_policy_sets_are_versioned_handles() -> None:
    first, second = PolicySet([]), PolicySet([])
    assert second.version > first.version


def test_index_returns_only_statements_that_can_match() -> None:
    statements = [allow(f"svc{i}:res:op{j}") for i in range(40) for j in range(8)]
    policies = [policy(*statements[k : k + 8], name=f"p{k}") for k in range(0, len(statements), 8)]
    policies.append(policy(allow("svc7:*:op*"), deny("*:*:op3"), name="wild"))
    rules = PolicySet(policies)
    found = rules.candidates("svc7:res:op3")
    assert [(r.policy, r.statement.index) for r in found] == [("p56", 3), ("wild", 0), ("wild", 1)]
    assert not rules.decide("svc7:res:op3").allowed


def test_not_action_statements() -> None:
    rules = PolicySet([policy(allow("modelarts:*:*"), {"Effect": "Deny", "NotAction": ["modelarts:notebook:*"]})])
    assert rules.decide("modelarts:notebook:start").allowed
    assert rules.decide("modelarts:trainJob:create").explicit


def test_actions_are_case_insensitive_resources_are_not() -> None:
    rules = PolicySet([policy(allow("obs:Bucket:ListBucket", Resource=["obs:*:*:bucket:Data*"]))])
    assert rules.decide("obs:bucket:listbucket", "obs:cn-north-4:acc:bucket:Data1").allowed
    assert not rules.decide("obs:bucket:listbucket", "obs:cn-north-4:acc:bucket:data1").allowed
    assert not rules.decide("obs:bucket:listbucket").allowed  # no resource: a resource-scoped statement never applies


def test_variables_are_inserted_literally_into_patterns() -> None:
    rules = PolicySet([policy(allow("obs:object:GetObject", Resource=["obs:*:*:object:home/${g:UserName}/*"]))])
    assert rules.decide("obs:object:GetObject", "obs:r:a:object:home/alice/x", {"g:UserName": "alice"}).allowed
    # A user named "*" must not become a wildcard.
    assert not rules.decide("obs:object:GetObject", "obs:r:a:object:home/bob/x", {"g:UserName": "*"}).allowed


@pytest.mark.parametrize("value", [["alice"], ("alice",), ["alice", "bob"]])
def test_a_multi_valued_key_never_substitutes(value: object) -> None:
    # access_model.md §1.7: a multi-valued key fails substitution, whatever the number of its values.
    resource = "obs:*:*:object:home/${g:UserName}/*"
    by_resource = PolicySet([policy(allow("obs:object:GetObject", Resource=[resource]))])
    assert not by_resource.decide("obs:object:GetObject", "obs:r:a:object:home/alice/x", {"g:UserName": value}).allowed
    condition = {"StringEquals": {"g:UserName": ["${g:UserName}"]}}
    by_condition = PolicySet([policy(allow("svc:thing:get", Condition=condition))])
    assert not by_condition.decide("svc:thing:get", None, {"g:UserName": value}).allowed
    # The default stands in for an absent key only: a multi-valued one still fails.
    with_default = {"StringEquals": {"g:UserName": ["${g:UserName, 'alice'}"]}}
    rules = PolicySet([policy(allow("svc:thing:get", Condition=with_default))])
    assert rules.decide("svc:thing:get", None, {"g:UserName": "alice"}).allowed
    assert not rules.decide("svc:thing:get", None, {"g:UserName": value}).allowed


def test_system_policies_and_allowed_actions() -> None:
    catalog = modelarts_actions()
    assert "modelarts:notebook:create" in catalog
    assert "modelarts:pool:create" in catalog
    full = PolicySet([system_policies()["ModelArts FullAccess"]])
    assert full.allowed_actions(catalog) == list(catalog)
    common = PolicySet([system_policies()["ModelArts CommonOperations"]])
    denied = set(catalog) - set(common.allowed_actions(catalog))
    assert denied == {"modelarts:pool:create", "modelarts:pool:update", "modelarts:pool:delete"}


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ({"Effect": "Allow", "Action": ["modelarts:notebook:st?rt"]}, "? is a wildcard only in version 5.0"),
        ({"Effect": "Allow", "Action": ["ModelArts:notebook:list"]}, "service 'ModelArts' must be lower-case"),
        ({"Effect": "Allow", "Action": "modelarts:notebook:list"}, "Statement[0].Action: must be a JSON array"),
        ({"Effect": "Allow", "Action": ["a:b:c"], "Sid": "x"}, "unknown key 'Sid' (allowed in version 1.1"),
        ({"Effect": "Allow", "Action": ["a:b:c"], "Condition": {"NumberEquals": {"k": ["ten"]}}}, "'ten'"),
        ({"Effect": "Allow", "Action": ["a:b:c"], "Condition": {"Bool": {"g:MFAAge": ["true"]}}}, "type number"),
        ({"Effect": "Allow", "Action": ["a:b:c"], "Condition": {"NullIfExists": {"k": ["true"]}}}, "unknown"),
    ],
)
def test_validation_messages_name_statement_field_and_rule(statement: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidPolicy) as raised:
        parse_policy({"Version": "1.1", "Statement": [statement]}, name="p")
    assert any(expected in problem for problem in raised.value.problems), raised.value.problems
    assert all(problem.startswith("Statement[0]") for problem in raised.value.problems)


def test_lint_finds_shadowed_impossible_and_broad() -> None:
    developer = policy(
        allow("modelarts:pool:create"),
        allow("modelarts:trainjob:creat*"),
        allow(
            "modelarts:notebook:list",
            Condition={"NumberGreaterThan": {"g:MFAAge": ["100"]}, "NumberLessThan": {"g:MFAAge": ["50"]}},
        ),
        name="dev",
    )
    guard = policy(deny("modelarts:pool:*"), allow("*:*:*"), name="guard")
    found = {(w.policy, w.statement): w.message for w in lint([developer, guard], modelarts_actions())}
    assert "denied without condition by policy 'guard' statement 0" in found["dev", 0]
    assert "name it exactly" in found["dev", 1]
    assert "can never hold" in found["dev", 2]
    assert "every action of every service" in found["guard", 1]
    assert lint([policy(allow("modelarts:notebook:list"))], modelarts_actions()) == []


def test_documented_and_lower_case_spellings_share_the_fast_path() -> None:
    condition = {"StringEquals": {"g:UserName": ["alice"]}, "IpAddress": {"g:SourceIp": ["10.0.0.0/8"]}}
    rules = PolicySet([policy(allow("modelarts:notebook:list", Condition=condition))])
    documented = {"g:UserName": "alice", "g:SourceIp": "10.1.2.3"}
    assert rules.decide("modelarts:notebook:list", context=documented).allowed
    assert rules.decide("modelarts:notebook:list", context={"g:username": "alice", "g:sourceip": "10.1.2.3"}).allowed
    assert rules.decide("modelarts:notebook:list", context={"G:USERNAME": "alice", "G:SOURCEIP": "10.1.2.3"}).allowed
    assert (rules.hits, rules.misses) == (2, 1)
    assert not rules.decide("modelarts:notebook:list", context={**documented, "g:SourceIp": "11.0.0.1"}).allowed


def test_a_key_spelled_twice_is_refused() -> None:
    rules = PolicySet([policy(allow("modelarts:notebook:list", Condition={"StringEquals": {"x:k": ["a"]}}))])
    with pytest.raises(ValueError, match="twice"):
        rules.decide("modelarts:notebook:list", context={"X:K": "a", "x:K": "b"})


def test_lint_finds_statements_that_never_apply_to_the_routes() -> None:
    usage = RouteUse.of(["svc:report:get", "svc:report:list", "svc:report:delete"], ["svc:report:get"])
    rules = policy(
        deny("svc:report:get", Resource=["svc:*:*:report:42"]),  # applies: get has a resource
        deny("svc:report:delete", Resource=["svc:*:*:report:42"]),  # never: delete has none
        deny("svc:report:*", Resource=["svc:*:*:report:*"]),  # applies to get only
        allow("svc:report:list", "svc:other:*"),  # one entry matches nothing
        allow("nosuch:*:*"),
        {"Effect": "Deny", "NotAction": ["svc:*:*"]},  # lists every action
        {"Effect": "Deny", "NotAction": ["svc:report:get"], "Resource": ["svc:*:*:report:1"]},
        name="p",
    )
    found = [(w.statement, w.message) for w in never_applies(rules, usage)]
    assert found == [
        (
            1,
            "this Deny never applies: it has a Resource, but no route of the catalog gives its actions "
            "(svc:report:delete) a resource",
        ),
        (
            2,
            "this Deny never applies to svc:report:delete, svc:report:list: it has a Resource, and no route of "
            "the catalog gives them a resource",
        ),
        (3, "Action svc:other:* matches no action of the route catalog"),
        (4, "this Allow never applies: no action of the route catalog matches its Action"),
        (5, "this Deny never applies: NotAction lists every action of the route catalog"),
        (
            6,
            "this Deny never applies: it has a Resource, but no route of the catalog gives its actions "
            "(svc:report:delete, svc:report:list) a resource",
        ),
    ]
    assert [w for w in lint([rules], usage=usage) if w.message.startswith(("this", "Action"))] == never_applies(
        rules, usage
    )


def test_lint_lists_the_inferred_actions_a_policy_relies_on() -> None:
    inferred = ["svc:job:reboot", "svc:net:list", "svc:net:create"]
    usage = RouteUse.of(["svc:job:get", *inferred], [], inferred)
    rules = policy(
        allow("svc:job:reboot", "svc:job:*"),  # named exactly; the pattern also covers a documented action
        allow("svc:net:*"),  # matches inferred actions only
        deny("svc:net:create"),  # a Deny relies on the name as much as an Allow
        allow("svc:*:*"),
        {"Effect": "Allow", "NotAction": ["svc:net:*"]},
        name="p",
    )
    tail = ": no ModelArts documentation names them (authmw derived them from the route)"
    found = [(w.statement, w.message) for w in relies_on_inferred(rules, usage)]
    assert found == [
        (0, "Action svc:job:reboot relies on inferred action(s) svc:job:reboot" + tail),
        (1, "Action svc:net:* relies on inferred action(s) svc:net:create, svc:net:list" + tail),
        (2, "Action svc:net:create relies on inferred action(s) svc:net:create" + tail),
    ]
    assert set(found) <= {(w.statement, w.message) for w in lint([rules], usage=usage)}
    assert relies_on_inferred(rules, RouteUse.of(usage.actions, [])) == []  # a catalog with nothing inferred
