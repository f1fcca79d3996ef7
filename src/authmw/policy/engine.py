"""Compiled policy sets: an immutable handle indexed by action, evaluated with explanations and a cache.

Evaluation (``research/access_model.md`` §2): any matching Deny → deny (explicit); else any matching
Allow → allow; else deny (implicit). A statement matches when its action (or NotAction), resource and every
condition match. A session policy intersects: both sets must allow, either may deny.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from authmw.models import Decision
from authmw.policy.conditions import CANONICAL_KEYS, Condition
from authmw.policy.document import Policy, Statement
from authmw.policy.patterns import glob_escape, glob_regex, is_glob
from authmw.policy.variables import FAILED, has_variables, substitute

__all__ = ["PolicySet"]

Context = Mapping[str, Any]
#: Keys whose value changes from request to request: decisions reading them are never cached.
VOLATILE_KEYS = frozenset({"g:currenttime"})
_VARIABLE_KEY = re.compile(r"\$\{\s*([A-Za-z0-9_.:/-]+)")
_versions = itertools.count(1)
_EMPTY: Context = MappingProxyType({})


class _Plan(NamedTuple):
    """What deciding one action needs: its Deny and Allow statements (each in document order), the context
    keys they read (and a reader of their values), and whether decisions may be cached."""

    action: str  # lower-case
    denies: tuple[_Rule, ...]
    allows: tuple[_Rule, ...]
    keys: tuple[str, ...]
    read: Callable[[Context], tuple[Any, ...]]
    cacheable: bool


@dataclass(frozen=True, slots=True, eq=False)  # identity: rules are collected into sets while planning
class _Rule:
    policy: str
    order: int
    statement: Statement
    version: str
    action_patterns: tuple[re.Pattern[str], ...]  # wildcard actions (and every NotAction entry)
    keys: frozenset[str]  # condition keys the statement reads, variables included
    decision: Decision  # what this statement decides when it applies (built once)

    def action_matches(self, action: str) -> bool:
        hit = action in self.statement.actions or any(p.fullmatch(action) for p in self.action_patterns)
        return not hit if self.statement.not_action else hit

    def resource_matches(self, resource: str | None, context: Context) -> bool:
        patterns = self.statement.resources
        if patterns is None:
            return True
        if resource is None:
            return False  # a resource-scoped statement never applies to a request without a resource
        segments = resource.split(":", 4)
        if len(segments) != 5:
            return False
        for written in patterns:
            pattern = written
            if has_variables(written):
                resolved = substitute(written, context, escape=glob_escape, version=self.version)
                if resolved is FAILED:
                    continue
                pattern = resolved
            wanted = pattern.split(":", 4)
            if all(_segment(w, s, self.version) for w, s in zip(wanted, segments, strict=True)):
                return True
        return False


def _segment(pattern: str, value: str, version: str) -> bool:
    if not is_glob(pattern):
        return pattern == value
    return glob_regex(pattern, question_mark=version == "5.0").fullmatch(value) is not None


def _keys_of(statement: Statement) -> frozenset[str]:
    keys = {condition.key for condition in statement.conditions}
    texts = [*(statement.resources or ()), *(v for c in statement.conditions for v in c.values)]
    keys.update(match.group(1).lower() for text in texts for match in _VARIABLE_KEY.finditer(text))
    return frozenset(keys)


class PolicySet:
    """An immutable, versioned, compiled set of policies (a principal's groups, user and agency policies).

    Exact actions are found by dict lookup, wildcard actions grouped by service, so a decision looks at the
    statements that can match the action only. Decisions are cached (bounded, ``ttl`` seconds on the injected
    ``timer``), keyed by the action, the resource and exactly the context keys those statements read;
    decisions that read ``g:CurrentTime`` are never cached.
    """

    def __init__(
        self,
        policies: Iterable[Policy] = (),
        *,
        default_allow_without_policies: bool = False,
        cache_size: int = 10_000,
        ttl: float = 300.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policies = tuple(policies)
        self.version = next(_versions)
        self.legacy_allow = default_allow_without_policies and not self.policies
        self._exact: dict[str, list[_Rule]] = {}
        self._by_service: dict[str, list[_Rule]] = {}
        self._anywhere: list[_Rule] = []
        order = 0
        for policy in self.policies:
            for statement in policy.statements:
                patterns = tuple(
                    glob_regex(a, question_mark=policy.version == "5.0", stop=":")
                    for a in statement.actions
                    if statement.not_action or is_glob(a, question_mark=policy.version == "5.0")
                )
                where = _where(policy.name, statement)
                decision = (
                    Decision(True, False, policy.name, statement.index, f"allowed by {where}")
                    if statement.allow
                    else Decision(False, True, policy.name, statement.index, f"explicit deny by {where}")
                )
                keys = _keys_of(statement)
                rule = _Rule(policy.name, order, statement, policy.version, patterns, keys, decision)
                order += 1
                self._index(rule)
        self._plans: dict[str, _Plan] = {}
        # A plain dict (insertion-ordered: the oldest entry is evicted first) holding (decision, expiry):
        # a hit must cost a few dict operations, not a cache object's Python-level bookkeeping.
        self._cache: dict[tuple[Any, ...], tuple[Decision, float]] = {}
        self._cache_size = cache_size
        self._ttl = ttl
        self._timer = timer
        #: Cache statistics (approximate under concurrent use: counters are not locked).
        self.hits = self.misses = 0

    def _index(self, rule: _Rule) -> None:
        statement = rule.statement
        if statement.not_action:
            self._anywhere.append(rule)
            return
        for action in statement.actions:
            service = action.split(":", 1)[0]
            if not is_glob(action, question_mark=rule.version == "5.0"):
                self._exact.setdefault(action, []).append(rule)
            elif is_glob(service):
                self._anywhere.append(rule)
            else:
                self._by_service.setdefault(service, []).append(rule)

    def candidates(self, action: str) -> tuple[_Rule, ...]:
        """The statements that can match ``action``, in document order (memoised per action)."""
        plan = self._plan(action)
        return tuple(sorted((*plan.denies, *plan.allows), key=lambda rule: rule.order))

    def _plan(self, action: str) -> _Plan:
        plan = self._plans.get(action)
        if plan is None:
            lowered = action.lower()
            service = lowered.split(":", 1)[0]
            pool = {*self._exact.get(lowered, ()), *self._by_service.get(service, ()), *self._anywhere}
            rules = sorted((r for r in pool if r.action_matches(lowered)), key=lambda r: r.order)
            keys = frozenset().union(*(rule.keys for rule in rules))
            plan = _Plan(
                lowered,
                tuple(r for r in rules if not r.statement.allow),
                tuple(r for r in rules if r.statement.allow),
                tuple(sorted(keys)),
                _reader(tuple(sorted(keys))),
                self._cache_size > 0 and not keys & VOLATILE_KEYS,
            )
            if len(self._plans) < 100_000:  # bounded: actions come from a route catalog
                self._plans[action] = plan
        return plan

    def decide(
        self,
        action: str,
        resource: str | None = None,
        context: Context | None = None,
        *,
        session: PolicySet | None = None,
    ) -> Decision:
        """Allow or deny ``action`` on ``resource`` for the request ``context`` (condition keys → values).

        Condition keys are case-insensitive (lower-case keys are the fast path).
        """
        plan = self._plans.get(action) or self._plan(action)
        lowered, _, _, keys, read, cacheable = plan
        if context is None:
            context = _EMPTY
        if not cacheable:
            decision = self._evaluate(plan, resource, _lower_keys(context))
        else:  # the hot path, inlined: a hit costs a few dict operations
            values = read(context)
            if None in values and context and not all(map(str.islower, context)):
                context = _lower_keys(context)
                values = tuple(map(context.get, keys))
            # Text values key the cache as they are; anything else with its type (True == 1 == 1.0).
            if len(values) == 1:
                value = values[0]
                key: tuple[Any, ...] = (
                    (lowered, resource, value)
                    if value.__class__ is str or value is None
                    else (lowered, resource, _typed(value))
                )
            elif _TEXT_OR_ABSENT.issuperset(map(type, values)):
                key = (lowered, resource, *values)
            else:
                key = (lowered, resource, *map(_typed, values))
            now = self._timer()
            cached = self._cache.get(key)
            if cached is not None and cached[1] > now:
                self.hits += 1
                decision = cached[0]
            else:
                self.misses += 1
                decision = self._evaluate(plan, resource, _lower_keys(context))
                self._store(key, decision, now)
        if session is None or not decision.allowed:
            return decision
        narrowed = session.decide(action, resource, context)
        if narrowed.allowed:
            return decision
        reason = f"session policy: {narrowed.reason}"
        return Decision(False, narrowed.explicit, narrowed.policy, narrowed.statement, reason)

    def _store(self, key: tuple[Any, ...], decision: Decision, now: float) -> None:
        cache = self._cache
        if len(cache) >= self._cache_size:
            with suppress(KeyError, StopIteration, RuntimeError):  # raced with another thread: nothing to evict
                del cache[next(iter(cache))]
        cache[key] = (decision, now + self._ttl)

    def _evaluate(self, plan: _Plan, resource: str | None, context: Context) -> Decision:
        # Denies first: the first one that applies decides. Then the first Allow that applies.
        for rule in plan.denies:
            if _failure(rule, resource, context) is None:
                return rule.decision
        near_miss = ""
        for rule in plan.allows:
            failed = _failure(rule, resource, context)
            if failed is None:
                return rule.decision
            if isinstance(failed, Condition) and not near_miss:
                described = failed.describe(context)
                near_miss = f"; {_where(rule.policy, rule.statement)} did not apply: {described}"
        if self.legacy_allow and plan.action.startswith("modelarts:"):
            return Decision(True, False, None, None, "no policy attached: ModelArts legacy default allows")
        return Decision(False, False, None, None, "implicit deny: no statement allows" + near_miss)

    def allowed_actions(self, catalog: Iterable[str], context: Context | None = None) -> list[str]:
        """The actions of ``catalog`` this set allows for ``context`` (no resource: action-only services)."""
        return [action for action in catalog if self.decide(action, None, context).allowed]


_NO_RESOURCE = object()  # _failure(): the resource did not match


def _failure(rule: _Rule, resource: str | None, context: Context) -> Condition | object | None:
    """None if ``rule`` applies; else the first condition that fails, or ``_NO_RESOURCE``."""
    if rule.statement.resources is not None and not rule.resource_matches(resource, context):
        return _NO_RESOURCE
    for condition in rule.statement.conditions:
        if not condition.holds(context):
            return condition
    return None


def _where(policy: str, statement: Statement) -> str:
    sid = f" ({statement.sid})" if statement.sid else ""
    return f"policy {policy!r} statement {statement.index}{sid}"


_TEXT_OR_ABSENT = frozenset({str, type(None)})


def _typed(value: Any) -> Any:
    """A cache-key form of a context value: ``True``, ``1`` and ``1.0`` compare equal but decide differently."""
    if value.__class__ is str:
        return value
    if isinstance(value, list | tuple):
        return (list, tuple(map(_typed, value)))
    return (value.__class__, value)


def _lower_keys(context: Context) -> Context:
    """The context with lower-case keys; a key spelled twice (in different case) is a caller's bug."""
    if context and not all(map(str.islower, context)):
        lowered = {key.lower(): value for key, value in context.items()}
        if len(lowered) != len(context):
            raise ValueError("a condition key appears twice in the context, in different case")
        return lowered
    return context


def _reader(keys: tuple[str, ...]) -> Callable[[Context], tuple[Any, ...]]:
    """Reads the values of ``keys`` (lower-case) from a context spelled in lower case or as documented."""
    spellings = tuple(CANONICAL_KEYS.get(key, key) for key in keys)
    if len(keys) == 1:
        key, spelled = keys[0], spellings[0]

        def read_one(context: Context) -> tuple[Any, ...]:
            value = context.get(key)
            return (context.get(spelled) if value is None else value,)

        return read_one
    if len(keys) == 2:
        (first, second), (first_spelled, second_spelled) = keys, spellings

        def read_two(context: Context) -> tuple[Any, ...]:
            a, b = context.get(first), context.get(second)
            return (
                context.get(first_spelled) if a is None else a,
                context.get(second_spelled) if b is None else b,
            )

        return read_two

    def read_many(context: Context) -> tuple[Any, ...]:
        values = tuple(map(context.get, keys))
        if None in values:
            values = tuple(context.get(s) if v is None else v for v, s in zip(values, spellings, strict=True))
        return values

    return read_many
