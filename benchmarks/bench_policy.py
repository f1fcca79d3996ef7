"""Policy-decision benchmarks: authmw's ``PolicySet.decide`` against pycasbin and cedarpy on the same decision.

Layer: policy decision (house rule 15). One process, one run: authmw with the decision cache hit, with the
cache off (the compiled index plus evaluation), and on the first decision for an action, then pycasbin and
cedarpy deciding the same request over the same rules. Policies, enforcers, parsed policy sets and entity
stores are built before the clock starts; only the decision is timed.

The workload has 10, 1,000 and 10,000 statements, one action each, spread over policies of 1 to 8
statements. Actions come from the ModelArts action list (``tests/data/research/modelarts_actions.tsv``,
with a built-in copy as fallback) and from synthetic services; there are exact and wildcard actions, Deny
statements and conditions (``StringEquals`` on ``g:UserName``, ``IpAddress`` on ``g:SourceIp``). The decision
under test is ``modelarts:trainJob:create`` for alice from 10.1.2.3, which is allowed.

The harness is ``bench_signing``'s: each case is sized to a batch of about ``--batch-ms`` milliseconds and
warmed up once, then ``--repeats`` rounds run one batch of every case, round-robin, with the GC off inside
each batch. The table reports the median, the minimum and the interquartile range of the per-batch times.

    python benchmarks/bench_policy.py [--json PATH] [--repeats 15] [--batch-ms 50] [--sizes 10,1000] [--check]
    python benchmarks/bench_policy.py --breakdown   # where the µs of a cache miss (and a hit) go
    python benchmarks/bench_policy.py --profile     # cProfile of cache-off decisions at 1,000 and 10,000
    python benchmarks/bench_policy.py --patterns    # the worst admitted wildcard patterns vs 16 KiB subjects

``--patterns`` decides with the worst Resource and ``StringLike`` patterns the validator admits against a 16 KiB
path parameter and context value (target ≤ 1 ms), and compares the old backtracking regex with the matcher on
a subject short enough for the regex to finish.
"""

from __future__ import annotations

import argparse
import cProfile
import fnmatch
import io
import ipaddress
import json
import os
import pstats
import random
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from pathlib import Path
from typing import Any

from authmw.policy import Decision, Policy, PolicySet, parse_policy
from bench_signing import (
    Case,
    Neighbours,
    Verdict,
    _package,
    _us,
    case_record,
    machine,
    print_preamble,
    run_cases,
    same_op,
)

# -- the workload ----------------------------------------------------------------------------------------

SIZES = (10, 1_000, 10_000)
MAX_STATEMENTS = 8  # the validator's limit per policy
SEED = 20261128

TEST_ACTION = "modelarts:trainJob:create"  # the decision under test: allowed
DENIED_ACTION = "modelarts:trainJob:delete"  # a sanity probe: explicitly denied
USER, SOURCE_IP = "alice", "10.1.2.3"
CONTEXT = {"g:UserName": USER, "g:SourceIp": SOURCE_IP}  # keys as written in policies
LOWER_CONTEXT = {key.lower(): value for key, value in CONTEXT.items()}  # as a caller may pre-normalise them
GROUPS = ("developers", "data-scientists", "operators", "auditors")  # alice belongs to all four

TSV = Path(__file__).resolve().parents[1] / "tests" / "data" / "research" / "modelarts_actions.tsv"
#: Used when the research list is not on this machine: the common verbs on the main ModelArts resource types.
_FALLBACK_ACTIONS = tuple(
    f"modelarts:{kind}:{verb}"
    for kind in ("dataset", "notebook", "trainJob", "model", "service", "workspace")
    for verb in ("create", "delete", "get", "list", "update")
)
MODELARTS_WILDCARDS = (
    "modelarts:*:delete*",
    "modelarts:*:list*",
    "modelarts:*:get*",
    "modelarts:*:create*",
    "modelarts:trainJob:*",
    "modelarts:dataset:*",
    "modelarts:notebook:*",
    "modelarts:*:*",
)
SERVICES = 60
TYPES = ("instance", "volume", "job", "bucket", "key", "cluster")
OPS = ("create", "delete", "get", "list", "update", "start", "stop", "describe")
SERVICE_WILDCARDS = ("*:list", "*:get*", "*:delete*", "instance:*", "*:*")
USERS = ("alice", "bob", "carol", "dave")
CIDRS = ("10.0.0.0/8", "192.168.0.0/16", "172.16.0.0/12")


def modelarts_actions() -> list[str]:
    """The distinct ModelArts actions of the research list (header and odd rows skipped)."""
    try:
        rows = TSV.read_text().splitlines()[1:]
    except OSError:
        return list(_FALLBACK_ACTIONS)
    found = {row.split("\t")[2] for row in rows if row.count("\t") >= 2}
    return sorted(a for a in found if a.startswith("modelarts:") and a.count(":") == 2)


def iam_match(pattern: str, action: str) -> bool:
    """IAM action semantics, written independently of authmw: ``*`` within a segment, case-insensitive."""
    wanted, got = pattern.lower().split(":"), action.lower().split(":")
    return len(wanted) == len(got) and all(fnmatch.fnmatchcase(g, w) for w, g in zip(wanted, got, strict=True))


@dataclass(frozen=True)
class Rule:
    """One statement in an engine-neutral form: a single action (exact or wildcard) and at most two conditions."""

    allow: bool
    action: str  # as written; authmw lower-cases it, the peers get it lower-cased
    user: str | None = None  # StringEquals g:UserName
    cidr: str | None = None  # IpAddress g:SourceIp


#: Statements planted in every workload; the first four are the ones that can match TEST_ACTION.
PLANTED = (
    Rule(True, TEST_ACTION, user=USER),  # allows (condition holds)
    Rule(True, "modelarts:trainJob:*", cidr="10.0.0.0/8"),  # allows (condition holds)
    Rule(False, TEST_ACTION, user="mallory"),  # a Deny whose condition does not hold
    Rule(True, "modelarts:*:create*"),  # allows
    Rule(False, DENIED_ACTION),  # the deny probe
)
MATCHING_PLANTED = 4


@dataclass
class Workload:
    size: int
    overlapping: bool
    policies: list[tuple[str, str, list[Rule]]]  # (policy name, group it is attached to, statements)

    @property
    def rules(self) -> list[tuple[str, Rule]]:
        return [(group, rule) for _, group, rules in self.policies for rule in rules]

    @property
    def matching(self) -> int:
        """Statements whose action matches TEST_ACTION (what the engine must evaluate after its index)."""
        return sum(iam_match(rule.action, TEST_ACTION) for _, rule in self.rules)

    # authmw ---------------------------------------------------------------------------------------------

    def documents(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for name, _, rules in self.policies:
            statements = []
            for rule in rules:
                statement: dict[str, Any] = {"Effect": "Allow" if rule.allow else "Deny", "Action": [rule.action]}
                condition: dict[str, Any] = {}
                if rule.user:
                    condition["StringEquals"] = {"g:UserName": [rule.user]}
                if rule.cidr:
                    condition["IpAddress"] = {"g:SourceIp": [rule.cidr]}
                if condition:
                    statement["Condition"] = condition
                statements.append(statement)
            out.append((name, {"Version": "1.1", "Statement": statements}))
        return out

    def authmw(self) -> list[Policy]:
        return [parse_policy(document, name=name) for name, document in self.documents()]

    # pycasbin -------------------------------------------------------------------------------------------

    def casbin(self, match: str) -> Any:
        """An RBAC enforcer: alice → four groups → one ``p`` line per statement (effect and conditions as fields).

        The action test comes first in the matcher: it rejects most lines before the role lookup, which is
        the fastest order for pycasbin (the conventional ``g(...)``-first order is slower).
        """
        import casbin  # type: ignore[import-untyped]

        model = casbin.Model()
        model.load_model_from_text(casbin_model(match))
        enforcer = casbin.Enforcer(model)
        lines = [
            [group, r.action.lower(), "allow" if r.allow else "deny", r.user or "", r.cidr or ""]
            for group, r in self.rules
        ]
        assert enforcer.add_policies(lines)
        assert enforcer.add_grouping_policies([[USER, group] for group in GROUPS])
        assert len(enforcer.get_policy()) == self.size
        return enforcer

    # cedarpy --------------------------------------------------------------------------------------------

    def cedar_text(self) -> str:
        """One Cedar policy per statement: exact actions as ``action ==``, wildcards as ``context.action like``."""
        out = []
        for group, rule in self.rules:
            action = rule.action.lower()
            conditions = []
            scope = f'action == Action::"{action}"'
            if "*" in action:
                scope = "action"
                conditions.append(f'context.action like "{action}"')
            if rule.user:
                conditions.append(f'context.username == "{rule.user}"')
            if rule.cidr:
                conditions.append(f'context.source_ip.isInRange(ip("{rule.cidr}"))')
            when = f" when {{ {' && '.join(conditions)} }}" if conditions else ""
            effect = "permit" if rule.allow else "forbid"
            out.append(f'{effect}(principal in Group::"{group}", {scope}, resource){when};')
        return "\n".join(out)


def casbin_model(match: str) -> str:
    return (
        "[request_definition]\nr = sub, act, user, ip\n\n"
        "[policy_definition]\np = sub, act, eft, user, ip\n\n"
        "[role_definition]\ng = _, _\n\n"
        "[policy_effect]\ne = some(where (p.eft == allow)) && !some(where (p.eft == deny))\n\n"
        f'[matchers]\nm = {match}(r.act, p.act) && g(r.sub, p.sub) && (p.user == "" || p.user == r.user) '
        '&& (p.ip == "" || ipMatch(r.ip, p.ip))\n'
    )


def cedar_entities() -> str:
    groups = [{"uid": {"type": "Group", "id": g}, "attrs": {}, "parents": []} for g in GROUPS]
    user = {"uid": {"type": "User", "id": USER}, "attrs": {}, "parents": [{"type": "Group", "id": g} for g in GROUPS]}
    return json.dumps([user, *groups])


def cedar_request(action: str) -> dict[str, Any]:
    action = action.lower()
    return {
        "principal": f'User::"{USER}"',
        "action": f'Action::"{action}"',
        "resource": 'Resource::"none"',
        "context": {"username": USER, "action": action, "source_ip": {"__extn": {"fn": "ip", "arg": SOURCE_IP}}},
    }


def background_rule(rng: random.Random, actions: Sequence[str], overlapping: bool) -> Rule:
    """A random statement. Deny wildcards stay on synthetic services and no Deny matches TEST_ACTION, so all
    three engines reach the same decision (keyMatch treats everything after the first ``*`` as a wildcard).
    Without ``overlapping``, no background statement matches TEST_ACTION at all."""
    while True:
        modelarts, wildcard, deny = rng.random() < 0.35, rng.random() < 0.2, rng.random() < 0.1
        if modelarts:
            action = rng.choice(MODELARTS_WILDCARDS) if wildcard else rng.choice(actions)
        else:
            service = f"svc{rng.randrange(SERVICES)}"
            rest = rng.choice(SERVICE_WILDCARDS) if wildcard else f"{rng.choice(TYPES)}:{rng.choice(OPS)}"
            action = f"{service}:{rest}"
        if deny and wildcard and modelarts:
            continue
        if iam_match(action, TEST_ACTION) and (deny or not overlapping):
            continue
        user = rng.choice(USERS) if rng.random() < 0.12 else None
        cidr = rng.choice(CIDRS) if rng.random() < 0.06 else None
        return Rule(not deny, action, user, cidr)


def build_workload(size: int, *, overlapping: bool = False) -> Workload:
    rng = random.Random(f"{SEED}-{size}-{overlapping}")
    actions = modelarts_actions()
    seen = set(PLANTED)  # no two identical statements: pycasbin would drop the copies as duplicate rules
    rules: list[Rule] = []
    while len(rules) < size - len(PLANTED):
        rule = background_rule(rng, actions, overlapping)
        if rule not in seen:
            seen.add(rule)
            rules.append(rule)
    for rule in PLANTED:
        rules.insert(rng.randrange(len(rules) + 1), rule)
    policies: list[tuple[str, str, list[Rule]]] = []
    while rules:
        take = rng.randint(1, MAX_STATEMENTS)
        index = len(policies)
        policies.append((f"policy-{index:05d}", GROUPS[index % len(GROUPS)], rules[:take]))
        del rules[:take]
    return Workload(size, overlapping, policies)


# -- the cases -------------------------------------------------------------------------------------------

HIT = "authmw decide, cache hit"
MISS = "authmw decide, cache off (miss)"
NEW = "authmw decide, first decision for a new action"
DENSE = "authmw decide, cache off, overlapping workload"
CASBIN = "pycasbin Enforcer.enforce, RBAC + keyMatch"
CASBIN_GLOB = "pycasbin Enforcer.enforce, RBAC + globMatch"
CEDAR = "cedarpy is_authorized, pre-parsed PolicySet + Entities"
CEDAR_RAW = "cedarpy _internal.is_authorized_batch (no Python wrapper)"
CONTROL = "control: harness + empty function call"
HIT_LOWER = "authmw decide, cache hit, context keys already lower-case"
GLOB_LIMIT = 1_000
PATTERNS = "patterns"  # the group of the wildcard rows


@dataclass
class Setup:
    """Everything built before timing for one size, plus what the report needs to know about it."""

    workload: Workload
    policies: list[Policy]
    cases: list[Case]
    notes: dict[str, str]


def _noop() -> None:
    return None


def check(name: str, allowed: object, denied: object) -> None:
    """Fail before timing if an engine does not reach the expected decisions (we must time the same work)."""
    assert allowed is True, f"{name}: {TEST_ACTION} should be allowed, got {allowed!r}"
    assert denied is False, f"{name}: {DENIED_ACTION} should be denied, got {denied!r}"


def new_actions(n: int) -> list[str]:
    """``n`` distinct ModelArts-like actions no PolicySet has seen (real types, real verb prefixes, a number)."""
    types = ("trainJob", "dataset", "notebook", "model", "service", "workspace")
    verbs = ("create", "delete", "get", "list", "update", "stop")
    return [f"modelarts:{types[i % 6]}:{verbs[i // 6 % 6]}Item{i}" for i in range(n)]


def authmw_cases(label: str, policies: list[Policy], dense: list[Policy] | None) -> list[Case]:
    hit = PolicySet(policies)
    check("authmw (cache on)", hit.decide(TEST_ACTION, None, CONTEXT).allowed, hit.decide(DENIED_ACTION).allowed)
    miss = PolicySet(policies, cache_size=0)
    check("authmw (cache off)", miss.decide(TEST_ACTION, None, CONTEXT).allowed, miss.decide(DENIED_ACTION).allowed)

    def first_decisions(n: int) -> Callable[[], object]:
        # A fresh compiled set per batch (built here, untimed) and n actions it has never seen: every call
        # computes the candidate list for its action, misses the decision cache and fills both.
        fresh = PolicySet(policies)
        actions = new_actions(n)
        decide = fresh.decide

        def run() -> None:
            for action in actions:
                decide(action, None, CONTEXT)

        return run

    cases = [
        Case(HIT, label, same_op(hit.decide, TEST_ACTION, None, CONTEXT)),
        Case(HIT_LOWER, label, same_op(hit.decide, TEST_ACTION, None, LOWER_CONTEXT)),
        Case(MISS, label, same_op(miss.decide, TEST_ACTION, None, CONTEXT)),
        Case(NEW, label, first_decisions),
    ]
    if dense is not None:
        overlapping = PolicySet(dense, cache_size=0)
        allowed, denied = overlapping.decide(TEST_ACTION, None, CONTEXT), overlapping.decide(DENIED_ACTION)
        check("authmw (overlapping)", allowed.allowed, denied.allowed)
        cases.append(Case(DENSE, label, same_op(overlapping.decide, TEST_ACTION, None, CONTEXT)))
    return cases


def casbin_cases(workload: Workload, label: str) -> list[Case]:
    try:
        import casbin  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        print("  pycasbin not installed: peer skipped", file=sys.stderr)
        return []
    cases = []
    variants = [(CASBIN, "keyMatch"), (CASBIN_GLOB, "globMatch")]
    if workload.size > GLOB_LIMIT:  # ~1.4 s per decision at 10,000 rules: it would dominate the run
        print(f"  pycasbin globMatch skipped above {GLOB_LIMIT:,} rules", file=sys.stderr)
        variants.pop()
    for name, match in variants:
        enforcer = workload.casbin(match)
        args = (USER, TEST_ACTION.lower(), USER, SOURCE_IP)
        check(name, enforcer.enforce(*args), enforcer.enforce(USER, DENIED_ACTION.lower(), USER, SOURCE_IP))
        cases.append(Case(name, label, same_op(enforcer.enforce, *args)))
    return cases


def cedar_cases(workload: Workload, label: str) -> list[Case]:
    try:
        import cedarpy  # type: ignore[import-untyped]
        from cedarpy import _internal
    except ImportError:
        print("  cedarpy not installed: peer skipped", file=sys.stderr)
        return []
    policies = cedarpy.PolicySet.from_str(workload.cedar_text())
    assert len(policies) == workload.size
    entities = cedarpy.Entities.from_json_str(cedar_entities())
    request = cedar_request(TEST_ACTION)

    def allowed(action: str) -> bool:
        result = cedarpy.is_authorized(cedar_request(action), policies, entities)
        assert not result.diagnostics.errors, result.diagnostics.errors
        return bool(result.allowed)

    check(CEDAR, allowed(TEST_ACTION), allowed(DENIED_ACTION))
    # What is_authorized does beneath its Python wrapper (context as a JSON string, result left as JSON text).
    raw_request = {**request, "context": json.dumps(request["context"])}
    raw = partial(_internal.is_authorized_batch, [raw_request], policies, entities._inner, None, False)
    assert json.loads(raw()[0])["decision"] == "Allow"
    return [
        Case(CEDAR, label, same_op(cedarpy.is_authorized, request, policies, entities)),
        Case(CEDAR_RAW, label, same_op(raw)),
    ]


# -- wildcard patterns: the worst the validator admits ----------------------------------------------------

SUBJECT = 16 * 1024  # the longest path parameter an HTTP server passes (request lines are capped near 16 KiB)
REGEX_SUBJECT = 20  # where the old backtracking regex still finishes (in ~10 ms) on the "stars" pattern
WORST_PREFIX = "authmw decide, cache off, worst admitted"


def worst_patterns(wildcards: int, searched: int) -> dict[str, str]:
    """The admitted patterns that cost the most against ``"a" * SUBJECT`` (tests/core/test_policy_patterns.py):
    runs that occur everywhere but never line up, runs placed only at the very end, a ``?`` run as wide as
    allowed, a literal run that defeats ``str.find``'s skip table."""
    return {
        "stars": "a*" * (wildcards - 1) + "b",
        "late": "*" + "*".join(["a" * 40] * (wildcards - 2)) + "*b",
        "question": "*" + "a?" + "a" * (searched - 3) + "b*",
        "find": "*" + "a" * 49 + "b" + "a" * 49 + "*",
    }


def reference_regex(pattern: str) -> re.Pattern[str]:
    """The regex authmw built from a pattern before (``*`` → ``.*``): right semantics, exponential worst case."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.DOTALL)


def pattern_cases() -> list[Case]:
    """Decisions over the worst admitted Resource and StringLike patterns against 16 KiB subjects, and the
    old regex against the new matcher where the regex still finishes."""
    try:
        from authmw.policy.document import MAX_SEARCHED_WIDTH, MAX_WILDCARDS
        from authmw.policy.patterns import compile_glob
    except ImportError:
        print("  this authmw has no compiled wildcard patterns: pattern rows skipped", file=sys.stderr)
        return []
    cases = []
    worst = worst_patterns(MAX_WILDCARDS, MAX_SEARCHED_WIDTH)
    resource = "svc:r:acc:report:" + "a" * SUBJECT
    for name, pattern in worst.items():
        allow = {"Effect": "Allow", "Action": ["svc:type:get"]}
        deny = {"Effect": "Deny", "Action": ["svc:type:get"], "Resource": ["svc:r:acc:report:" + pattern]}
        rules = PolicySet([parse_policy({"Version": "5.0", "Statement": [allow, deny]})], cache_size=0)
        assert rules.decide("svc:type:get", resource).allowed  # the Deny is evaluated and does not apply
        cases.append(
            Case(
                f"{WORST_PREFIX} Resource ({name}) vs 16 KiB parameter",
                PATTERNS,
                same_op(rules.decide, "svc:type:get", resource),
            )
        )
        like = {"Effect": "Allow", "Action": ["svc:type:get"], "Condition": {"StringLike": {"k": [pattern]}}}
        rules = PolicySet([parse_policy({"Version": "5.0", "Statement": [like]})], cache_size=0)
        context = {"k": "a" * SUBJECT}
        assert not rules.decide("svc:type:get", None, context).allowed
        cases.append(
            Case(
                f"{WORST_PREFIX} StringLike ({name}) vs 16 KiB value",
                PATTERNS,
                same_op(rules.decide, "svc:type:get", None, context),
            )
        )
    small = "a" * REGEX_SUBJECT
    regex, glob = reference_regex(worst["stars"]), compile_glob(worst["stars"])
    assert regex.fullmatch(small) is None and not glob.matches(small)
    cases += [
        Case(f"old regex fullmatch, stars vs {REGEX_SUBJECT} characters", PATTERNS, same_op(regex.fullmatch, small)),
        Case(f"authmw Glob.matches, stars vs {REGEX_SUBJECT} characters", PATTERNS, same_op(glob.matches, small)),
    ]
    return cases


def patterns_report(args: argparse.Namespace) -> int:
    found, neighbours = facts(), Neighbours()
    cases = [Case(CONTROL, "control", same_op(_noop)), *pattern_cases()]
    run_cases(cases, args.repeats, args.batch_ms)
    found["other_busy_cpus"] = neighbours.busy_cpus()
    found["load_average_end"] = os.getloadavg()
    setup = Setup(build_workload(len(PLANTED)), [], cases, {})
    print_preamble("Wildcard pattern benchmarks", found, args, f"authmw {found['authmw']}")
    print(table({0: setup}))
    out = [v for v in verdicts({0: setup}) if "16 KiB" in v.target]
    print("\n### Targets\n")
    for verdict in out:
        print(verdict.line())
    return 1 if args.check and any(v.met is False for v in out) else 0


def build(size: int, peers: bool) -> Setup:
    label = f"{size:,}"
    print(f"  building the {label}-statement workload ...", file=sys.stderr, flush=True)
    workload = build_workload(size)
    dense_workload = build_workload(size, overlapping=True)
    policies = workload.authmw()
    assert sum(len(p.statements) for p in policies) == size
    assert all(len(p.statements) <= MAX_STATEMENTS for p in policies)
    dense = dense_workload.authmw()
    cases = authmw_cases(label, policies, dense)
    if peers:
        cases += casbin_cases(workload, label) + cedar_cases(workload, label)
    candidates = len(PolicySet(policies).candidates(TEST_ACTION.lower()))
    assert candidates == workload.matching == MATCHING_PLANTED, (candidates, workload.matching)
    dense_candidates = len(PolicySet(dense).candidates(TEST_ACTION.lower()))
    assert dense_candidates == dense_workload.matching
    notes = {
        "policies": f"{len(policies):,}",
        "candidates": str(candidates),
        "dense_candidates": str(dense_candidates),
    }
    for case in cases:
        if case.name == DENSE:
            case.note = f"{dense_candidates} statements match the action"
        elif case.name in (MISS, HIT):
            case.note = f"{candidates} statements match the action"
    return Setup(workload, policies, cases, notes)


# -- report ----------------------------------------------------------------------------------------------


def facts() -> dict[str, Any]:
    base = machine()
    keep = ("date", "python", "implementation", "platform", "cpu", "cpu_count", "load_average_start")
    out = {key: base[key] for key in keep}
    for name in ("authmw", "pycasbin", "cedarpy"):
        out[name] = _package(name)
    return out


def table(setups: dict[int, Setup]) -> str:
    rows = [
        "| statements | case | median µs/op | min µs | IQR µs | ops × repeats | ÷ miss |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for setup in setups.values():
        by_name = {case.name: case for case in setup.cases}
        miss = by_name.get(MISS)
        for case in setup.cases:
            q1, q3 = case.quartiles
            ratio = f"{case.median / miss.median:,.1f}×" if miss and case.group not in ("control", PATTERNS) else ""
            name = f"{case.name} ({case.note})" if case.note else case.name
            rows.append(
                f"| {case.group} | {name} | {_us(case.median)} | {_us(min(case.per_op_ns))} | {_us(q1)}–{_us(q3)} "
                f"| {case.n} × {len(case.per_op_ns)} | {ratio} |"
            )
    return "\n".join(rows)


def summary(setups: dict[int, Setup]) -> str:
    rows = [
        "| statements (policies) | hit µs | hit, lower-case keys µs | miss µs | first decision for an action µs "
        "| miss, overlapping µs (matches) | pycasbin keyMatch µs | ÷ miss | cedarpy µs | ÷ miss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(case: Case | None) -> str:
        return _us(case.median) if case else "–"

    for size, setup in setups.items():
        by = {case.name: case for case in setup.cases}
        miss, casbin, cedar = by.get(MISS), by.get(CASBIN), by.get(CEDAR)
        vs_casbin = f"{casbin.median / miss.median:,.0f}×" if casbin and miss else "–"
        vs_cedar = f"{cedar.median / miss.median:,.0f}×" if cedar and miss else "–"
        rows.append(
            f"| {size:,} ({setup.notes['policies']}) | {cell(by.get(HIT))} | {cell(by.get(HIT_LOWER))} | "
            f"{cell(miss)} | {cell(by.get(NEW))} | "
            f"{cell(by.get(DENSE))} ({setup.notes['dense_candidates']}) | {cell(casbin)} | {vs_casbin} | "
            f"{cell(cedar)} | {vs_cedar} |"
        )
    return "\n".join(rows)


def verdicts(setups: dict[int, Setup]) -> list[Verdict]:
    def get(size: int, name: str) -> Case | None:
        setup = setups.get(size)
        return next((c for c in setup.cases if c.name == name), None) if setup else None

    out: list[Verdict] = []
    hits = {size: get(size, HIT) for size in setups}
    goal = "cache hit ≤ 0.5 µs"
    measured = {size: case.median / 1000 for size, case in hits.items() if case}
    if not measured:
        out.append(Verdict(goal, None, "case not run"))
    else:
        worst = max(measured.values())
        how = f"{0.5 - worst:.2f} µs to spare" if worst <= 0.5 else f"{worst - 0.5:.2f} µs over ({worst / 0.5:.1f}×)"
        listed = ", ".join(f"{us:.2f} µs at {size:,}" for size, us in measured.items())
        lower = [case.median / 1000 for size in setups if (case := get(size, HIT_LOWER))]
        also = f"; with lower-case context keys {min(lower):.2f}–{max(lower):.2f} µs" if lower else ""
        out.append(Verdict(goal, worst <= 0.5, f"{listed}; worst {how}{also}"))
    miss = get(1_000, MISS)
    goal = "cache miss at 1,000 statements ≤ 10 µs"
    if miss is None:
        out.append(Verdict(goal, None, "case not run"))
    else:
        us = miss.median / 1000
        how = f"{10 - us:.2f} µs to spare" if us <= 10 else f"{us - 10:.2f} µs over ({us / 10:.2f}× the budget)"
        out.append(Verdict(goal, us <= 10, f"median {us:.2f} µs, {how}"))
    for name, short, factor in ((CASBIN, "pycasbin (RBAC + keyMatch)", 200), (CEDAR, "cedarpy", 60)):
        goal = f"miss at 1,000 statements ≥ {factor}× faster than {short}"
        peer = get(1_000, name)
        if miss is None or peer is None:
            out.append(Verdict(goal, None, "case not run"))
            continue
        ratio = peer.median / miss.median
        out.append(
            Verdict(
                goal,
                ratio >= factor,
                f"{_us(peer.median)} µs ÷ {_us(miss.median)} µs = {ratio:,.0f}× "
                f"({factor}× needs authmw ≤ {peer.median / factor / 1000:,.2f} µs)",
            )
        )
    worst = [c for setup in setups.values() for c in setup.cases if c.name.startswith(WORST_PREFIX)]
    goal = "worst admitted pattern vs a 16 KiB subject decides in ≤ 1 ms"
    if not worst:
        out.append(Verdict(goal, None, "case not run"))
    else:
        slowest = max(worst, key=lambda case: case.median)
        us = slowest.median / 1000
        out.append(Verdict(goal, us <= 1000, f"slowest: {slowest.name}, median {us:,.1f} µs"))
    small, large = get(10, MISS), get(10_000, MISS)
    goal = "miss at 10,000 statements ≤ 2× the miss at 10"
    if small is None or large is None:
        out.append(Verdict(goal, None, "case not run"))
    else:
        ratio = large.median / small.median
        out.append(Verdict(goal, ratio <= 2, f"{_us(large.median)} µs ÷ {_us(small.median)} µs = {ratio:.2f}×"))
    return out


def report(setups: dict[int, Setup], found: dict[str, Any], args: argparse.Namespace) -> list[Verdict]:
    versions = f"authmw {found['authmw']}, pycasbin {found['pycasbin']}, cedarpy {found['cedarpy']}"
    print_preamble("Policy decision benchmarks", found, args, versions)
    print(
        f"Decision under test: `{TEST_ACTION}`, no resource, context `{json.dumps(CONTEXT)}` → allowed. "
        f"Matches: statements whose action matches it.\n"
    )
    print(summary(setups))
    print()
    print(table(setups))
    out = verdicts(setups)
    print("\n### Targets\n")
    for verdict in out:
        print(verdict.line())
    return out


def dump(path: Path, setups: dict[int, Setup], found: dict[str, Any], out: list[Verdict], args: Any) -> None:
    results = []
    for size, setup in setups.items():
        results.extend(case_record(case, statements=size) for case in setup.cases)
    document = {
        "machine": found,
        "settings": {"repeats": args.repeats, "batch_ms": args.batch_ms, "sizes": list(setups), "seed": SEED},
        "workloads": {str(size): setup.notes for size, setup in setups.items()},
        "results": results,
        "targets": [{"target": v.target, "met": v.met, "detail": v.detail} for v in out],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nraw results written to {path}", file=sys.stderr)


# -- breakdown and profile -------------------------------------------------------------------------------


def breakdown_cases(size: int) -> list[Case]:
    """The parts of ``PolicySet.decide`` on the workload, each timed alone.

    Besides the public calls this uses ``PolicySet._evaluate`` and the candidate rules' statements and
    conditions: a diagnosis of the current implementation, not an API. A step whose private name is gone in
    the engine under test is skipped (the engine changes; the totals stay comparable).
    """
    label = f"{size:,}"
    policies = build_workload(size).authmw()
    off = PolicySet(policies, cache_size=0)
    on = PolicySet(policies)
    action = TEST_ACTION.lower()
    lower_context = LOWER_CONTEXT
    rules = off.candidates(action)
    conditions = [c for rule in rules for c in rule.statement.conditions]
    allow = next(rule for rule in rules if rule.statement.allow)
    for context in (CONTEXT, lower_context):
        on.decide(TEST_ACTION, None, context)
    hits = on.hits
    on.decide(TEST_ACTION, None, CONTEXT)
    assert on.hits == hits + 1, "the cache-hit case must hit"

    def each_resource() -> None:
        for rule in rules:
            rule.resource_matches(None, lower_context)

    def each_condition() -> None:
        for condition in conditions:
            condition.holds(lower_context)

    def decision() -> object:  # built once per statement at compile time now; timed for scale
        where = f"policy {allow.policy!r} statement {allow.statement.index}"
        return Decision(True, False, allow.policy, allow.statement.index, f"allowed by {where}")

    steps: list[tuple[str, Callable[..., object], tuple[Any, ...]]] = [
        ("decide, cache off (total)", off.decide, (TEST_ACTION, None, CONTEXT)),
        ("decide, cache off, lower-case context keys (total)", off.decide, (TEST_ACTION, None, lower_context)),
        ("decide, cache hit (total)", on.decide, (TEST_ACTION, None, CONTEXT)),
        ("decide, cache hit, lower-case context keys (total)", on.decide, (TEST_ACTION, None, lower_context)),
        ("1 candidates(action) (memoised)", off.candidates, (TEST_ACTION,)),
        ("2 lower-case the context keys (dict comprehension)", lambda: {k.lower(): v for k, v in CONTEXT.items()}, ()),
    ]
    plan = off._plan(TEST_ACTION)
    steps.append(("3 _evaluate over the candidates (total)", off._evaluate, (plan, None, lower_context)))
    steps.append(("3' the plan's cache key from the context", plan.cache_key, (CONTEXT, None)))
    steps += [
        (f"3a  resource_matches × {len(rules)}", each_resource, ()),
        (f"3b  Condition.holds × {len(conditions)} (all of them)", each_condition, ()),
    ]
    seen: set[str] = set()
    for condition in conditions:
        text = f"{condition.text} {condition.key}"
        if text not in seen:
            seen.add(text)
            steps.append((f"3b.{len(seen)} one {text}", condition.holds, (lower_context,)))
    steps += [
        ("3c  Decision(...) with its reason text", decision, ()),
        ("for scale: ipaddress.ip_address(source ip)", ipaddress.ip_address, (SOURCE_IP,)),
        ("for scale: dict.get", lower_context.get, ("g:username",)),
    ]
    return [Case(name, label, same_op(fn, *args)) for name, fn, args in steps]


def breakdown(sizes: Sequence[int], repeats: int, batch_ms: float) -> None:
    per_size = {size: breakdown_cases(size) for size in sizes}
    run_cases([case for cases in per_size.values() for case in cases], repeats, batch_ms)
    print("\n## Where the µs of a decision go\n")
    rules = len(PolicySet(build_workload(sizes[0]).authmw()).candidates(TEST_ACTION))
    print(f"`{TEST_ACTION}` with context `{json.dumps(CONTEXT)}`; {rules} statements match the action.\n")
    print("| step | " + " | ".join(f"{size:,} statements µs" for size in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    names = dict.fromkeys(case.name for cases in per_size.values() for case in cases)
    for name in names:
        cells = []
        for size in sizes:
            case = next((c for c in per_size[size] if c.name == name), None)
            cells.append(f"{case.median / 1000:.3f}" if case else "–")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(
        "\nEach step is timed alone in the same harness (its call overhead, ~0.04 µs, included), so steps do "
        "not add up exactly to the totals."
    )


def _profile(title: str, calls: int, run: Callable[[], object]) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(14)
    print(f"\n## cProfile: {calls:,} {title} (sorted by own time)\n")
    print("```")
    print("\n".join(line.rstrip() for line in text.getvalue().splitlines() if line.strip()))
    print("```")


def profile(sizes: Sequence[int], calls: int) -> None:
    """cProfile of cache-off decisions per size, then of the overlapping workload and of first decisions."""
    for size in sizes:
        decide = PolicySet(build_workload(size).authmw(), cache_size=0).decide
        decide(TEST_ACTION, None, CONTEXT)
        _profile(f"cache-off decisions, {size:,} statements", calls, lambda d=decide: _repeat(d, calls))
    size = max(sizes)
    dense = PolicySet(build_workload(size, overlapping=True).authmw(), cache_size=0).decide
    dense(TEST_ACTION, None, CONTEXT)
    title = f"cache-off decisions, {size:,} statements, overlapping workload"
    _profile(title, calls // 10, lambda: _repeat(dense, calls // 10))
    fresh = PolicySet(build_workload(size).authmw())
    actions = new_actions(calls // 20)

    def first() -> None:
        for action in actions:
            fresh.decide(action, None, CONTEXT)

    _profile(f"first decisions for new actions, {size:,} statements", len(actions), first)


def _repeat(decide: Callable[..., object], calls: int) -> None:
    for _ in repeat(None, calls):
        decide(TEST_ACTION, None, CONTEXT)


# -- main ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write raw per-batch results as JSON")
    parser.add_argument("--repeats", type=int, default=15, help="timed batches per case (default 15)")
    parser.add_argument("--batch-ms", type=float, default=50.0, help="target duration of one batch (default 50)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="statement counts (default 10,1000,10000)")
    parser.add_argument("--only", action="append", metavar="TEXT", help="run cases whose name contains TEXT")
    parser.add_argument("--no-peers", action="store_true", help="skip pycasbin and cedarpy")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--breakdown", action="store_true", help="time the steps of a decision")
    parser.add_argument("--profile", action="store_true", help="cProfile cache-off decisions")
    parser.add_argument(
        "--patterns", action="store_true", help="the worst admitted wildcard patterns against 16 KiB subjects"
    )
    args = parser.parse_args(argv)
    try:
        sizes = [int(text.replace("_", "")) for text in args.sizes.split(",")]
    except ValueError:
        parser.error("--sizes takes comma-separated integers")
    if args.repeats < 1 or args.batch_ms <= 0 or any(size < len(PLANTED) for size in sizes):
        parser.error(f"--repeats and --batch-ms must be positive, sizes at least {len(PLANTED)}")
    if args.breakdown:
        breakdown(sizes, args.repeats, args.batch_ms)
        return 0
    if args.profile:
        profile([size for size in sizes if size >= 1_000] or sizes, 200_000)
        return 0
    if args.patterns:  # alone: their 16 KiB subjects disturb the sub-µs rows when run round-robin with them
        return patterns_report(args)
    found = facts()
    neighbours = Neighbours()
    setups = {size: build(size, not args.no_peers) for size in sizes}
    control = Case(CONTROL, "control", same_op(_noop))
    first = next(iter(setups.values()))
    first.cases.insert(0, control)
    for setup in setups.values():
        if args.only:
            setup.cases = [c for c in setup.cases if any(t.lower() in c.name.lower() for t in args.only)]
    run_cases([case for setup in setups.values() for case in setup.cases], args.repeats, args.batch_ms)
    found["other_busy_cpus"] = neighbours.busy_cpus()
    found["load_average_end"] = os.getloadavg()
    out = report(setups, found, args)
    if args.json:
        dump(args.json, setups, found, out, args)
    return 1 if args.check and any(v.met is False for v in out) else 0


if __name__ == "__main__":
    sys.exit(main())
