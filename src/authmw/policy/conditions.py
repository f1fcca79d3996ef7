"""Condition operators, compiled once per statement (semantics: ``research/access_model.md`` §1.5).

Within one condition block every operator and every key must hold (AND); the values listed for one key are
alternatives (OR): a positive operator holds if the request value matches any of them, a negated operator
(``StringNotEquals``, ``NotIpAddress``, ...) if it matches none. An absent key makes positive operators false
and negated ones true; ``...IfExists`` holds when the key is absent or empty; ``Null`` tests absence;
``ForAnyValue:``/``ForAllValues:`` compare request lists (absent: false / true). Condition key names are
case-insensitive, values are not (except the ``IgnoreCase`` operators).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from operator import eq, ge, gt, le, lt
from typing import Any

from authmw.policy.patterns import Glob, compile_glob, glob_escape
from authmw.policy.variables import FAILED, has_variables, substitute

__all__ = ["CANONICAL_KEYS", "GLOB_OPERATORS", "KEY_TYPES", "OPERATORS", "Condition", "Operator", "parse_operator"]

Value = Any  # a converted policy or request value (str, float, datetime, ip network, bool)


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII).fullmatch
_ISO_DATE = re.compile(
    r"\d{4}-\d\d-\d\d(?:T\d\d:\d\d(?::\d\d(?:\.\d{1,6})?)?(?:Z|[+-]\d\d:\d\d)?)?", re.ASCII
).fullmatch


def _as_number(value: object) -> float:
    """Numbers, or decimal text (no NaN, infinities, underscores or blanks)."""
    if isinstance(value, bool):
        raise ValueError("not a number")
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER(value)):
        number = float(value)
    else:
        raise ValueError("not a number")
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def _as_date(value: object) -> datetime:
    """ISO 8601 text (``2026-01-01`` or ``2026-01-01T00:00:00Z``); naive times are UTC."""
    if not isinstance(value, str) or not _ISO_DATE(value):
        raise ValueError("not an ISO 8601 date")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _as_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text not in ("true", "false"):
        raise ValueError("not a boolean")
    return text == "true"


def _as_network(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(value, str) or "%" in value:
        raise ValueError("not an IP address or CIDR")
    return ipaddress.ip_network(value, strict=False)


def _as_address(value: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not isinstance(value, str) or "%" in value:  # no IPv6 zone identifiers
        raise ValueError("not an IP address")
    return ipaddress.ip_address(value)


def _in_network(address: Value, network: Value) -> bool:
    return bool(address.version == network.version and address in network)


@dataclass(frozen=True, slots=True)
class Operator:
    """A base operator: how policy and request values are read and compared."""

    name: str
    category: str  # string | number | date | bool | ip | null
    negated: bool
    compare: Callable[[Value, Value], bool]
    policy_value: Callable[[object], Value]
    request_value: Callable[[object], Value]


def _string(name: str, compare: Callable[[str, str], bool], *, negated: bool = False) -> Operator:
    return Operator(name, "string", negated, compare, _as_text, _as_text)


def _like(request: str, pattern: Glob) -> bool:
    return pattern.matches(request)


def _as_glob(value: object) -> Glob:
    """A ``StringLike``/``StringMatch`` value, compiled once (``*`` and ``?`` are wildcards in every version)."""
    return compile_glob(_as_text(value))


def _glob_operator(name: str, *, negated: bool = False) -> Operator:
    return Operator(name, "string", negated, _like, _as_glob, _as_text)


# Number* and Date* share their comparisons; only the conversion of the values differs.
_ORDERED: tuple[tuple[str, Callable[[Value, Value], bool], bool], ...] = (
    ("Equals", eq, False),
    ("NotEquals", eq, True),
    ("LessThan", lt, False),
    ("LessThanEquals", le, False),
    ("GreaterThan", gt, False),
    ("GreaterThanEquals", ge, False),
)

_BASE: list[Operator] = [
    _string("StringEquals", lambda r, p: r == p),
    _string("StringNotEquals", lambda r, p: r == p, negated=True),
    _string("StringEqualsIgnoreCase", lambda r, p: r.casefold() == p.casefold()),
    _string("StringNotEqualsIgnoreCase", lambda r, p: r.casefold() == p.casefold(), negated=True),
    _glob_operator("StringLike"),
    _glob_operator("StringNotLike", negated=True),
    _glob_operator("StringMatch"),
    _glob_operator("StringNotMatch", negated=True),
    _string("StringStartWith", lambda r, p: r.startswith(p)),
    _string("StringNotStartWith", lambda r, p: r.startswith(p), negated=True),
    _string("StringEndWith", lambda r, p: r.endswith(p)),
    _string("StringNotEndWith", lambda r, p: r.endswith(p), negated=True),
    *(
        Operator(family + suffix, category, negated, compare, convert, convert)
        for family, category, convert in (("Number", "number", _as_number), ("Date", "date", _as_date))
        for suffix, compare, negated in _ORDERED
    ),
    Operator("Bool", "bool", False, lambda r, p: r == p, _as_bool, _as_bool),
    Operator("IpAddress", "ip", False, _in_network, _as_network, _as_address),
    Operator("NotIpAddress", "ip", True, _in_network, _as_network, _as_address),
    Operator("Null", "null", False, lambda r, p: r == p, _as_bool, _as_bool),
]
OPERATORS: Mapping[str, Operator] = {op.name: op for op in _BASE}
#: The operators whose policy values are wildcard patterns.
GLOB_OPERATORS = frozenset(op for op in _BASE if op.compare is _like)
_ALIASES = {"Numeric" + name[len("Number") :]: name for name in OPERATORS if name.startswith("Number")}

#: The documented spellings of the well-known condition keys (matching is case-insensitive; contexts spelled
#: this way, or in lower case, take the fast path).
CANONICAL_KEYS: Mapping[str, str] = {
    name.lower(): name
    for name in (
        "g:CurrentTime",
        "g:SourceIp",
        "g:MFAPresent",
        "g:MFAAge",
        "g:UserName",
        "g:UserId",
        "g:DomainName",
        "g:DomainId",
        "g:ProjectName",
        "g:ProjectId",
        "g:ServiceName",
        "g:PrincipalUrn",
        "g:PrincipalAccount",
        "g:TagKeys",
        "g:CalledVia",
        "g:EnterpriseProjectId",
        "modelarts:workspaceId",
        "modelarts:poolType",
    )
}

#: Types of the documented global keys (lower-case); other keys accept any operator.
KEY_TYPES: Mapping[str, str] = {
    "g:currenttime": "date",
    "g:sourceip": "ip",
    "g:mfapresent": "bool",
    "g:mfaage": "number",
    **dict.fromkeys(
        (
            "g:username",
            "g:userid",
            "g:domainname",
            "g:domainid",
            "g:projectname",
            "g:projectid",
            "g:servicename",
            "g:principalurn",
            "g:principalaccount",
            "g:tagkeys",
            "g:calledvia",
            "g:enterpriseprojectid",
            "modelarts:workspaceid",
            "modelarts:pooltype",
        ),
        "string",
    ),
}


def parse_operator(name: str) -> tuple[Operator, str, bool] | None:
    """``(operator, set prefix or "", if_exists)`` for a condition operator name, or None if unknown."""
    prefix = ""
    for candidate in ("ForAnyValue:", "ForAllValues:"):
        if name.startswith(candidate):
            prefix, name = candidate[:-1], name[len(candidate) :]
    if_exists = name.endswith("IfExists") and name != "IfExists"
    if if_exists:
        name = name[: -len("IfExists")]
    name = _ALIASES.get(name, name)
    operator = OPERATORS.get(name)
    if operator is None or (operator.name == "Null" and (if_exists or prefix)):
        return None
    return operator, prefix, if_exists


@lru_cache(maxsize=4096)
def _ip_bits(text: str) -> tuple[int, int] | None:
    """``(version, integer)`` of an address; None if it is not one. Cached: the same clients recur."""
    try:
        address = _as_address(text)
    except ValueError:
        return None
    return address.version, int(address)


def _fast_check(operator: Operator, key: str, static: tuple[Value, ...]) -> Callable[..., bool | None] | None:
    negated = operator.negated
    if operator.name in ("StringEquals", "StringNotEquals"):
        texts = frozenset(static)

        def string_set(context: Mapping[str, object]) -> bool | None:
            raw = context.get(key)
            if raw is None:
                return negated  # absent: positive operators fail, negated ones hold
            if raw.__class__ is not str:
                return None
            return negated if not raw else (raw in texts) != negated

        return string_set
    if operator.category == "ip":
        ranges = tuple((net.version, int(net.network_address), int(net.netmask)) for net in static)

        def ip_ranges(context: Mapping[str, object]) -> bool | None:
            raw = context.get(key)
            if raw is None:
                return negated
            if raw.__class__ is not str or len(raw) > 64:
                return None
            if not raw:
                return negated
            bits = _ip_bits(raw)
            if bits is None:
                return False  # a request value of the wrong type never satisfies the condition
            version, value = bits
            hit = any(version == v and value & mask == net for v, net, mask in ranges)
            return hit != negated

        return ip_ranges
    return None


@dataclass(frozen=True, slots=True)
class Condition:
    """One ``operator: {key: [values]}`` entry of a statement's Condition block."""

    text: str  # the operator as written, for explanations
    operator: Operator
    prefix: str
    if_exists: bool
    key: str  # lower-case
    values: tuple[str, ...]  # as written (variables unresolved)
    static: tuple[Value, ...] | None  # converted values when there are no variables
    version: str
    #: A specialised check for the common shapes (fixed string sets, fixed IP ranges, text request values);
    #: it returns None where the general evaluation must decide.
    fast: Callable[[Mapping[str, object]], bool | None] | None = None

    @classmethod
    def build(cls, text: str, key: str, values: list[str], version: str) -> Condition:
        parsed = parse_operator(text)
        assert parsed is not None  # validated before
        operator, prefix, if_exists = parsed
        static = None
        if not any(has_variables(v) for v in values):
            static = tuple(operator.policy_value(v) for v in values)
        fast = None
        if static is not None and not prefix and not if_exists:
            fast = _fast_check(operator, key.lower(), static)
        return cls(text, operator, prefix, if_exists, key.lower(), tuple(values), static, version, fast)

    def _policy_values(self, context: Mapping[str, object]) -> list[Value]:
        if self.static is not None:
            return list(self.static)
        glob = self.operator.compare is _like
        out = []
        for value in self.values:
            resolved = substitute(value, context, escape=glob_escape if glob else str, version=self.version)
            if resolved is FAILED:
                continue
            try:
                out.append(self.operator.policy_value(resolved))
            except ValueError:
                continue
        return out

    def holds(self, context: Mapping[str, object]) -> bool:
        """Whether the condition holds for ``context`` (lower-case keys)."""
        if self.fast is not None:
            decided = self.fast(context)
            if decided is not None:
                return decided
        raw = context.get(self.key)
        absent = raw is None or raw in ("", [])
        operator = self.operator
        if operator.name == "Null":
            return any(flag == absent for flag in self._policy_values(context))
        if absent:
            if self.prefix == "ForAllValues":
                return True
            if self.prefix == "ForAnyValue":
                return False
            return self.if_exists or operator.negated
        policy_values = self._policy_values(context)
        if not policy_values:
            return False  # every value failed substitution: the condition does not hold
        requested = list(raw) if isinstance(raw, list | tuple) else [raw]
        try:
            converted = [operator.request_value(v) for v in requested]
        except (ValueError, TypeError):
            return False  # a request value of the wrong type never satisfies the condition
        compare = operator.compare

        def one(value: Value) -> bool:
            hit = any(compare(value, p) for p in policy_values)
            return not hit if operator.negated else hit

        if self.prefix == "ForAllValues":
            return all(one(v) for v in converted)
        return any(one(v) for v in converted)

    def describe(self, context: Mapping[str, object]) -> str:
        actual = context.get(self.key)
        shown = "absent" if actual is None else repr(actual)
        return f"{self.text} {self.key}: expected {list(self.values)}, got {shown}"
