"""Warnings about valid but suspicious policies: shadowed statements, impossible conditions, broad wildcards,
statements that can never apply to the routes they are used with, and Action entries that rely on actions the
route catalog only inferred (named by authmw's naming rule, not by the service's documentation)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from authmw.policy.conditions import Condition
from authmw.policy.document import Policy, Statement
from authmw.policy.patterns import compile_glob, is_glob

__all__ = ["LintWarning", "RouteUse", "lint", "never_applies", "relies_on_inferred"]


@dataclass(frozen=True, slots=True)
class LintWarning:
    """One finding: the policy, the statement index and what is wrong."""

    policy: str
    statement: int
    message: str


@dataclass(frozen=True, slots=True)
class RouteUse:
    """What a route catalog asks of policies: the actions requests carry, and those of them some route gives a
    resource URN (a statement with ``Resource`` applies only to those). Built by the caller from its catalog,
    so a route that gains a resource changes the answer."""

    actions: frozenset[str]  # lower-case
    with_resource: frozenset[str]  # lower-case, a subset of actions
    inferred: frozenset[str] = frozenset()  # lower-case, a subset of actions: no documentation names them

    @classmethod
    def of(cls, actions: Iterable[str], with_resource: Iterable[str], inferred: Iterable[str] = ()) -> RouteUse:
        resourced = frozenset(a.lower() for a in with_resource)
        guessed = frozenset(a.lower() for a in inferred)
        return cls(frozenset(a.lower() for a in actions) | resourced | guessed, resourced, guessed)


def lint(
    policies: Sequence[Policy], catalog: Iterable[str] = (), *, usage: RouteUse | None = None
) -> list[LintWarning]:
    """Warnings for ``policies`` read together (as one principal's set); ``catalog`` sizes wildcards (default:
    the actions of ``usage``); with ``usage``, also the statements that can never apply (:func:`never_applies`)."""
    actions = tuple(a.lower() for a in catalog) or (tuple(sorted(usage.actions)) if usage else ())
    warnings: list[LintWarning] = []
    denies = [(p, s) for p in policies for s in p.statements if not s.allow and _unconditional(s)]
    for policy in policies:
        for statement in policy.statements:
            if statement.allow:
                shadow = _shadowing_deny(statement, denies)
                if shadow:
                    warnings.append(LintWarning(policy.name, statement.index, shadow))
                warnings += [LintWarning(policy.name, statement.index, m) for m in _broad(policy, statement, actions)]
            impossible = _impossible(statement.conditions)
            if impossible:
                warnings.append(LintWarning(policy.name, statement.index, f"conditions can never hold: {impossible}"))
    if usage is not None:
        for policy in policies:
            warnings += never_applies(policy, usage)
            warnings += relies_on_inferred(policy, usage)
    return warnings


def relies_on_inferred(policy: Policy, usage: RouteUse) -> list[LintWarning]:
    """Action entries of ``policy`` that name an inferred action of the catalog ``usage``, or a pattern matching
    inferred actions only: what they allow or deny rests on authmw's reading of the route, which the real
    service may not share. (A pattern that also matches documented actions relies on no one action.)"""
    if not usage.inferred:
        return []
    question_mark = policy.version == "5.0"
    catalog = sorted(usage.actions)
    found = []
    for statement in policy.statements:
        if statement.not_action:
            continue
        for entry in statement.actions:
            glob = compile_glob(entry, question_mark=question_mark, stop=":")
            matched = [action for action in catalog if glob.matches(action)]
            if matched and all(action in usage.inferred for action in matched):
                found.append(
                    LintWarning(
                        policy.name,
                        statement.index,
                        f"Action {entry} relies on inferred action(s) {_some(matched)}: no ModelArts "
                        "documentation names them (authmw derived them from the route)",
                    )
                )
    return found


def never_applies(policy: Policy, usage: RouteUse) -> list[LintWarning]:
    """Statements (or Action entries) of ``policy`` that no request of the catalog ``usage`` describes can meet:
    Action patterns matching no action, and a ``Resource`` on actions no route gives a resource, which never
    applies (a Deny written that way denies nothing)."""
    question_mark = policy.version == "5.0"
    found: list[LintWarning] = []
    catalog = sorted(usage.actions)
    for statement in policy.statements:
        found += [
            LintWarning(policy.name, statement.index, m) for m in _unmet(statement, catalog, usage, question_mark)
        ]
    return found


def _unmet(statement: Statement, catalog: list[str], usage: RouteUse, question_mark: bool) -> list[str]:
    effect = "Allow" if statement.allow else "Deny"
    globs = [compile_glob(a, question_mark=question_mark, stop=":") for a in statement.actions]
    hits = [[action for action in catalog if glob.matches(action)] for glob in globs]
    if statement.not_action:
        listed = {action for matched in hits for action in matched}
        applies = [action for action in catalog if action not in listed]
        if not applies:
            return [f"this {effect} never applies: NotAction lists every action of the route catalog"]
    else:
        applies = sorted({action for matched in hits for action in matched})
        if not applies:
            return [f"this {effect} never applies: no action of the route catalog matches its Action"]
    messages = []
    if not statement.not_action:
        for action, matched in zip(statement.actions, hits, strict=True):
            if not matched:
                messages.append(f"Action {action} matches no action of the route catalog")
    if statement.resources is not None:
        bare = [action for action in applies if action not in usage.with_resource]
        if len(bare) == len(applies):
            messages.append(
                f"this {effect} never applies: it has a Resource, but no route of the catalog gives its actions "
                f"({_some(bare)}) a resource"
            )
        elif bare:
            messages.append(
                f"this {effect} never applies to {_some(bare)}: it has a Resource, and no route of the catalog "
                "gives them a resource"
            )
    return messages


def _some(actions: list[str], shown: int = 3) -> str:
    more = len(actions) - shown
    return ", ".join(actions[:shown]) + (f" and {more} more" if more > 0 else "")


def _unconditional(statement: Statement) -> bool:
    return not statement.conditions and statement.resources is None and not statement.not_action


def _covers(pattern: str, action: str, version: str) -> bool:
    # A Deny pattern covers an Allow entry when it matches the entry's text; a '*' in the entry is then
    # matched by a '*' run of the Deny pattern, so wildcard entries are covered only by broader patterns.
    if not is_glob(pattern, question_mark=version == "5.0"):
        return pattern == action
    return compile_glob(pattern, question_mark=version == "5.0", stop=":").matches(action)


def _shadowing_deny(statement: Statement, denies: list[tuple[Policy, Statement]]) -> str:
    if statement.not_action:
        return ""
    for deny_policy, deny in denies:
        if all(any(_covers(p, a, deny_policy.version) for p in deny.actions) for a in statement.actions):
            return (
                f"every action it allows is denied without condition by policy {deny_policy.name!r} "
                f"statement {deny.index}: it never takes effect"
            )
    return ""


def _broad(policy: Policy, statement: Statement, catalog: tuple[str, ...]) -> list[str]:
    if statement.not_action:
        return ["Allow with NotAction grants every other action of every service, present and future"]
    found = []
    question_mark = policy.version == "5.0"
    for action in statement.actions:
        if action == "*:*:*":
            found.append("Action *:*:* grants every action of every service")
            continue
        if not is_glob(action, question_mark=question_mark) or not catalog:
            continue
        glob = compile_glob(action, question_mark=question_mark, stop=":")
        matched = [a for a in catalog if glob.matches(a)]
        service = action.split(":", 1)[0]
        of_service = [a for a in catalog if a.split(":", 1)[0] == service]
        if len(matched) == 1:
            found.append(f"{action} matches only {matched[0]}: name it exactly")
        elif of_service and len(matched) == len(of_service) and action != f"{service}:*:*":
            found.append(f"{action} matches every {service} action in the catalog: it is {service}:*:* in effect")
    return found


def _impossible(conditions: Iterable[Condition]) -> str:
    by_key: dict[str, list[Condition]] = {}
    for condition in conditions:
        by_key.setdefault(condition.key, []).append(condition)
    for key, group in by_key.items():
        null = [c for c in group if c.operator.name == "Null" and c.static and all(c.static)]
        present = [c for c in group if c.operator.name != "Null" and not c.operator.negated and not c.if_exists]
        if null and present:
            return f"{key} must be absent (Null) and present ({present[0].text})"
        low = [c for c in group if c.static and c.operator.name.endswith(("GreaterThan", "GreaterThanEquals"))]
        high = [c for c in group if c.static and c.operator.name.endswith(("LessThan", "LessThanEquals"))]
        if low and high and not low[0].prefix and not high[0].prefix:
            floor, ceiling = min(low[0].static or ()), max(high[0].static or ())
            strict = not (low[0].operator.name.endswith("Equals") and high[0].operator.name.endswith("Equals"))
            if floor > ceiling or (floor == ceiling and strict):
                return f"{key} must be above {list(low[0].values)} and below {list(high[0].values)}"
    return ""
