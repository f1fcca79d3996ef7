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
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from authmw.cache import BoundedCache
from authmw.policy.conditions import CANONICAL_KEYS, Condition
from authmw.policy.document import Policy, Statement
from authmw.policy.patterns import Glob, compile_glob, glob_escape, is_glob
from authmw.policy.variables import FAILED, has_variables, substitute

__all__ = ["LEGACY_DECISION", "Decision", "PolicySet"]

Context = Mapping[str, Any]
#: Keys whose value changes from request to request: decisions reading them are never cached.
VOLATILE_KEYS = frozenset({"g:currenttime"})
_MISSING: Any = object()
_VARIABLE_KEY = re.compile(r"\$\{\s*([A-Za-z0-9_.:/-]+)")
_versions = itertools.count(1)
_EMPTY: Context = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Decision:
    """An authorization decision and what decided it.

    ``policy``/``statement`` name the deciding statement (None for an implicit deny); ``reason`` says why in
    words, including the failed condition with expected and actual values when a statement almost applied.
    """

    allowed: bool
    explicit: bool
    policy: str | None
    statement: int | None
    reason: str


#: The ModelArts legacy rule's decision: a principal with no policy at all may perform any ModelArts action.
LEGACY_DECISION = Decision(True, False, None, None, "no policy attached: ModelArts legacy default allows")


class _Plan(NamedTuple):
    """What deciding one action needs: its Deny and Allow statements (each in document order), the context
    keys they read (and a reader of their values), and whether decisions may be cached."""

    action: str  # lower-case
    denies: tuple[_Rule, ...]
    allows: tuple[_Rule, ...]
    keys: tuple[str, ...]
    #: The cache key of a request, read straight from a context spelled in lower case or as documented, or
    #: None when that is not possible (other spellings, non-text values): the general path then decides.
    cache_key: Callable[[Context, str | None], tuple[Any, ...] | None]
    cacheable: bool


@dataclass(frozen=True, slots=True, eq=False)  # identity: rules are collected into sets while planning
class _Rule:
    policy: str
    order: int
    statement: Statement
    version: str
    action_patterns: tuple[Callable[[str], object], ...]  # Glob.test of wildcard actions (and every NotAction)
    #: Per Resource entry its compiled segments, or None when it has variables (compiled once substituted).
    resource_globs: tuple[tuple[Glob, ...] | None, ...]
    keys: frozenset[str]  # condition keys the statement reads, variables included
    decision: Decision  # what this statement decides when it applies (built once)

    def action_matches(self, action: str) -> bool:
        hit = action in self.statement.actions or any(test(action) for test in self.action_patterns)
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
        for written, precompiled in zip(patterns, self.resource_globs, strict=True):
            compiled = precompiled
            if compiled is None:  # variables: compiled after substitution (compile_glob memoises)
                resolved = substitute(written, context, escape=glob_escape, version=self.version)
                if resolved is FAILED:
                    continue
                compiled = _resource_globs(resolved, self.version)
            if all(glob.matches(segment) for glob, segment in zip(compiled, segments, strict=True)):
                return True
        return False


def _resource_globs(pattern: str, version: str) -> tuple[Glob, ...]:
    """The five segments of a Resource pattern, compiled (``*`` spans ``/`` but not the segments' ``:``)."""
    return tuple(compile_glob(segment, question_mark=version == "5.0") for segment in pattern.split(":", 4))


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
                    compile_glob(a, question_mark=policy.version == "5.0", stop=":").test
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
                resource_globs = tuple(
                    None if has_variables(r) else _resource_globs(r, policy.version) for r in statement.resources or ()
                )
                rule = _Rule(policy.name, order, statement, policy.version, patterns, resource_globs, keys, decision)
                order += 1
                self._index(rule)
        self._plans: BoundedCache[str, _Plan] = BoundedCache(100_000)  # actions come from a route catalog
        # catalog -> the condition keys its decisions read, sorted (None: one is volatile: no memo of them)
        self._catalog_keys: BoundedCache[tuple[str, ...], tuple[str, ...] | None] = BoundedCache(64)
        # (decision, expiry) pairs; a hit is the dict's own lookup (the hot path inlines BoundedCache.fresh).
        self._cache: BoundedCache[tuple[Any, ...], tuple[Decision, float]] = BoundedCache(cache_size, timer=timer)
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
                _key_reader(lowered, tuple(sorted(keys))),
                self._cache.capacity > 0 and not keys & VOLATILE_KEYS,
            )
            self._plans.put(action, plan)
        return plan

    def decide(
        self,
        action: str,
        resource: str | None = None,
        context: Context | None = None,
        *,
        session: PolicySet | None = None,
        legacy: bool = False,
    ) -> Decision:
        """Allow or deny ``action`` on ``resource`` for the request ``context`` (condition keys → values).

        Condition keys are case-insensitive (lower-case keys are the fast path). ``legacy`` applies the ModelArts
        legacy rule to this decision (as ``default_allow_without_policies`` does to all of them): with no policy
        at all, a ``modelarts:`` action is allowed (:data:`LEGACY_DECISION`), before any session policy narrows.
        """
        plan = self._plans.get(action) or self._plan(action)
        if plan.cacheable and session is None:  # the hot path: a hit is a few dict operations
            key = plan.cache_key(context or _EMPTY, resource)
            if key is not None:
                cached = self._cache.get(key)
                if cached is not None and cached[1] > self._timer():
                    self.hits += 1
                    decision = cached[0]
                    if decision.allowed or not (legacy or self.legacy_allow):
                        return decision
                    return self._legacy(decision, action)
        return self._decide(plan, action, resource, context or _EMPTY, session, legacy=legacy or self.legacy_allow)

    def _legacy(self, decision: Decision, action: str) -> Decision:
        """The ModelArts legacy rule, the one place it is decided: no policy at all allows ModelArts actions."""
        if not self.policies and not decision.explicit and action.startswith("modelarts:"):
            return LEGACY_DECISION
        return decision

    def _decide(
        self,
        plan: _Plan,
        action: str,
        resource: str | None,
        context: Context,
        session: PolicySet | None,
        *,
        legacy: bool = False,
    ) -> Decision:
        context = _lower_keys(context)
        if not plan.cacheable:
            decision = self._evaluate(plan, resource, context)
        else:
            # Text values key the cache as they are; anything else with its type (True == 1 == 1.0).
            key = (plan.action, resource, *(_typed(context.get(k)) for k in plan.keys))
            found = self._cache.fresh(key)
            if found is not None:
                self.hits += 1
                decision = found
            else:
                self.misses += 1
                decision = self._evaluate(plan, resource, context)
                self._cache.put(key, (decision, self._timer() + self._ttl))
        if legacy and not decision.allowed:
            decision = self._legacy(decision, action)
        if session is None or not decision.allowed:
            return decision
        narrowed = session.decide(action, resource, context)
        if narrowed.allowed:
            return decision
        reason = f"session policy: {narrowed.reason}"
        return Decision(False, narrowed.explicit, narrowed.policy, narrowed.statement, reason)

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
        return Decision(False, False, None, None, "implicit deny: no statement allows" + near_miss)

    def facts_read(self, catalog: tuple[str, ...], context: Context) -> tuple[Any, ...] | None:
        """What :meth:`allowed_actions` of ``catalog`` reads of ``context``: the typed values of the condition keys
        its decisions read, so that a caller may memoise the answer per set, session set, legacy rule and these
        (the set is immutable: a changed policy is a new set). None when that cannot be said safely: a decision
        reads the time, or the context spells a key another way than the lower-case or documented one."""
        keys = self._catalog_keys.get(catalog, _MISSING)
        if keys is _MISSING:
            read = frozenset().union(*(self._plan(action).keys for action in catalog))
            keys = None if read & VOLATILE_KEYS else tuple(sorted(read))
            self._catalog_keys.put(catalog, keys)
        if keys is None:
            return None
        values = []
        for key in keys:
            value = context.get(key)
            if value is None:
                value = context.get(CANONICAL_KEYS.get(key, key))
                if value is None and not all(map(str.islower, context)):
                    return None  # perhaps spelled some other way: the decisions read it, this cannot
            values.append(_typed(value))
        return tuple(values)

    def allowed_actions(
        self,
        catalog: Iterable[str],
        context: Context | None = None,
        *,
        session: PolicySet | None = None,
        legacy: bool = False,
    ) -> list[str]:
        """The actions of ``catalog`` this set allows for ``context`` (no resource: action-only services);
        ``session`` and ``legacy`` as for :meth:`decide`."""
        return [a for a in catalog if self.decide(a, None, context, session=session, legacy=legacy).allowed]


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


def _typed(value: Any) -> Any:
    """A cache-key form of a context value: ``True``, ``1`` and ``1.0`` compare equal but decide differently."""
    if value.__class__ is str or value is None:
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


def _key_reader(action: str, keys: tuple[str, ...]) -> Callable[[Context, str | None], tuple[Any, ...] | None]:
    """Builds ``cache_key(context, resource)`` for a plan: the key of the general path, without its copies.

    A value found under neither its lower-case nor its documented spelling is read again by the general path
    when the context has other spellings; a value that is not text (or absent) needs its type in the key.
    """
    spellings = tuple(CANONICAL_KEYS.get(key, key) for key in keys)

    def found(context: Context, value: Any) -> bool:
        if value is None:
            return all(map(str.islower, context))  # truly absent, not spelled some other way
        return value.__class__ is str

    if not keys:
        return lambda _context, resource: (action, resource)
    if len(keys) == 1:
        key, spelled = keys[0], spellings[0]

        def one(context: Context, resource: str | None) -> tuple[Any, ...] | None:
            value = context.get(key)
            if value is None:
                value = context.get(spelled)
            if value.__class__ is str or found(context, value):
                return (action, resource, value)
            return None

        return one
    if len(keys) == 2:
        (first, second), (first_spelled, second_spelled) = keys, spellings

        def two(context: Context, resource: str | None) -> tuple[Any, ...] | None:
            a = context.get(first)
            if a is None:
                a = context.get(first_spelled)
            b = context.get(second)
            if b is None:
                b = context.get(second_spelled)
            if (a.__class__ is str or found(context, a)) and (b.__class__ is str or found(context, b)):
                return (action, resource, a, b)
            return None

        return two

    def many(context: Context, resource: str | None) -> tuple[Any, ...] | None:
        values = []
        for key, spelled in zip(keys, spellings, strict=True):
            value = context.get(key)
            values.append(context.get(spelled) if value is None else value)
        if all(found(context, v) for v in values):
            return (action, resource, *values)
        return None

    return many
