"""Parse and validate IAM policy documents (Huawei syntax 1.1 and the 5.0 additions).

Every rule of ``research/access_model.md`` §1.2 is checked and reported as a problem naming the statement,
the field and the rule; all problems are collected before :class:`~authmw.errors.InvalidPolicy` is raised.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authmw.errors import InvalidPolicy
from authmw.policy.conditions import GLOB_OPERATORS, KEY_TYPES, OPERATORS, Condition, parse_operator
from authmw.policy.patterns import compile_glob
from authmw.policy.variables import has_variables

__all__ = ["Policy", "Statement", "parse_policy"]

VERSIONS = ("1.1", "5.0")
MAX_POLICY_CHARS = 6144
MAX_STATEMENTS = 8
MAX_ACTIONS = 100
MAX_ACTION_CHARS = 128
MAX_RESOURCES = 20
MAX_RESOURCE_CHARS = 1500
MAX_CONDITIONS = 10
MAX_CONDITION_VALUES = 10
MAX_CONDITION_CHARS = 1024
#: Wildcards (``*``, ``?``) in one Action, Resource or ``StringLike``/``StringMatch`` value, and the widest run
#: holding ``?`` between two ``*``: together they bound what matching one value costs (see patterns.Glob).
MAX_WILDCARDS = 10
MAX_SEARCHED_WIDTH = 16
_STATEMENT_KEYS = {"1.1": {"Effect", "Action", "NotAction", "Resource", "Condition"}}
_STATEMENT_KEYS["5.0"] = _STATEMENT_KEYS["1.1"] | {"Sid"}
_ACTION_SEGMENT = {"1.1": re.compile(r"[A-Za-z0-9_*-]+"), "5.0": re.compile(r"[A-Za-z0-9_*?-]+")}
_SERVICE = re.compile(r"[a-z0-9_*?-]+")
_VARIABLE = re.compile(r"\$\{[^}]*\}")


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement, validated; actions lower-cased (they are case-insensitive)."""

    index: int
    allow: bool
    actions: tuple[str, ...]
    not_action: bool
    resources: tuple[str, ...] | None  # None: every resource
    conditions: tuple[Condition, ...]
    sid: str | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """A validated policy document."""

    name: str
    version: str
    statements: tuple[Statement, ...]


def parse_policy(
    source: str | bytes | Mapping[str, Any],
    *,
    name: str = "policy",
    wildcard_limits: bool = True,
    size_limit: bool = True,
) -> Policy:
    """Validate and parse one document (JSON text or an already decoded object).

    ``wildcard_limits=False`` re-reads a stored document, which may predate :data:`MAX_WILDCARDS` and
    :data:`MAX_SEARCHED_WIDTH` (matching it stays bounded: those limits only keep the worst case small).
    ``size_limit=False`` compiles what the store derives from a stored document (a grant on a project adds a
    condition to each statement): :data:`MAX_POLICY_CHARS` held for the document as written, not for that.
    """
    if isinstance(source, str | bytes):
        text = source.decode() if isinstance(source, bytes) else source
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise InvalidPolicy(name, [f"not valid JSON: {exc}"]) from None
    else:
        document = source
        text = json.dumps(document, ensure_ascii=False)
    problems: list[str] = []
    if size_limit and len(text) > MAX_POLICY_CHARS:
        problems.append(f"policy: {len(text)} characters, at most {MAX_POLICY_CHARS} allowed")
    if not isinstance(document, dict):
        raise InvalidPolicy(name, [*problems, "policy: must be a JSON object"])
    for key in document:
        if key not in ("Version", "Statement"):
            problems.append(f"policy: unknown key {key!r} (allowed: Version, Statement)")
    version = document.get("Version")
    if version is None:
        problems.append('Version: missing (must be "1.1" or "5.0")')
    elif version not in VERSIONS:
        problems.append(f'Version: {version!r} is not allowed (custom policies use "1.1" or "5.0"; 1.0 is for roles)')
    version = version if version in VERSIONS else "1.1"
    raw_statements = document.get("Statement")
    statements: list[Statement] = []
    if not isinstance(raw_statements, list):
        problems.append("Statement: must be a JSON array")
    elif not 1 <= len(raw_statements) <= MAX_STATEMENTS:
        problems.append(f"Statement: {len(raw_statements)} statements, 1 to {MAX_STATEMENTS} required")
    else:
        for index, raw in enumerate(raw_statements):
            statement = _statement(index, raw, version, problems)
            if statement is not None:
                statements.append(statement)
        if wildcard_limits and not problems:
            problems += _wildcard_problems(statements, version)
    if problems:
        raise InvalidPolicy(name, problems)
    return Policy(name, version, tuple(statements))


def _string_list(where: str, value: object, problems: list[str], limit: int) -> list[str] | None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        problems.append(f"{where}: must be a JSON array of strings")
        return None
    if not 1 <= len(value) <= limit:
        problems.append(f"{where}: {len(value)} entries, 1 to {limit} required")
        return None
    return value


def _statement(index: int, raw: object, version: str, problems: list[str]) -> Statement | None:
    at = f"Statement[{index}]"
    if not isinstance(raw, dict):
        problems.append(f"{at}: must be a JSON object")
        return None
    before = len(problems)
    for key in raw:
        if key not in _STATEMENT_KEYS[version]:
            allowed = ", ".join(sorted(_STATEMENT_KEYS[version]))
            problems.append(f"{at}: unknown key {key!r} (allowed in version {version}: {allowed})")
    effect = raw.get("Effect")
    if effect is None:
        problems.append(f"{at}.Effect: missing (Allow or Deny)")
    elif not isinstance(effect, str) or effect.lower() not in ("allow", "deny"):
        problems.append(f"{at}.Effect: {effect!r} is not Allow or Deny")
    sid = raw.get("Sid")
    if sid is not None and not isinstance(sid, str):
        problems.append(f"{at}.Sid: must be a string")
    if "Action" in raw and "NotAction" in raw:
        problems.append(f"{at}: Action and NotAction cannot both be set")
    field = "NotAction" if "NotAction" in raw else "Action"
    actions: list[str] = []
    if field not in raw:
        problems.append(f"{at}: Action (or NotAction) is required")
    else:
        listed = _string_list(f"{at}.{field}", raw[field], problems, MAX_ACTIONS)
        for position, action in enumerate(listed or []):
            problem = _action_problem(action, version)
            if problem:
                problems.append(f"{at}.{field}[{position}]: {problem}")
            else:
                actions.append(action.lower())
    resources: list[str] | None = None
    if "Resource" in raw:
        resources = _string_list(f"{at}.Resource", raw["Resource"], problems, MAX_RESOURCES) or []
        for position, resource in enumerate(resources):
            problem = _resource_problem(resource)
            if problem:
                problems.append(f"{at}.Resource[{position}]: {problem}")
    conditions = _conditions(at, raw.get("Condition"), "Condition" in raw, version, problems)
    if len(problems) > before:
        return None
    return Statement(
        index=index,
        allow=str(effect).lower() == "allow",
        actions=tuple(actions),
        not_action=field == "NotAction",
        resources=None if resources is None else tuple(resources),
        conditions=tuple(conditions),
        sid=sid,
    )


def _action_problem(action: str, version: str) -> str | None:
    if len(action) > MAX_ACTION_CHARS:
        return f"longer than {MAX_ACTION_CHARS} characters"
    segments = action.split(":")
    if len(segments) != 3:
        return f"{action!r} must have three segments service:resourceType:operation"
    if not all(_ACTION_SEGMENT[version].fullmatch(segment) for segment in segments):
        extra = " ? is a wildcard only in version 5.0;" if "?" in action and version == "1.1" else ""
        return f"{action!r} has invalid characters;{extra} allowed: letters, digits, _ - and *"
    if not _SERVICE.fullmatch(segments[0]):
        return f"service {segments[0]!r} must be lower-case"
    return None


def _wildcard_problem(parts: list[str], *, question_mark: bool, stop: str = "") -> str | None:
    """Too many wildcards in a value (its ``parts`` are matched separately), or too wide a searched run."""
    # Substituted variables are inserted literally: only the author's own wildcards count.
    globs = [compile_glob(_VARIABLE.sub("", part), question_mark=question_mark, stop=stop) for part in parts]
    wildcards = sum(glob.wildcards for glob in globs)
    if wildcards > MAX_WILDCARDS:
        return f"{wildcards} wildcards (* and ?), at most {MAX_WILDCARDS} allowed"
    width = max(glob.searched_width for glob in globs)
    if width > MAX_SEARCHED_WIDTH:
        return f"? in a run of {width} characters between two *, at most {MAX_SEARCHED_WIDTH} allowed"
    return None


def _wildcard_problems(statements: list[Statement], version: str) -> list[str]:
    """The Action, Resource and ``StringLike``/``StringMatch`` values over the wildcard limits."""
    found = []
    question_mark = version == "5.0"  # in actions and resources; condition patterns always have '?'
    for statement in statements:
        at = f"Statement[{statement.index}]"
        field = "NotAction" if statement.not_action else "Action"
        for position, action in enumerate(statement.actions):
            problem = _wildcard_problem([action], question_mark=question_mark, stop=":")
            if problem:
                found.append(f"{at}.{field}[{position}]: {problem}")
        for position, resource in enumerate(statement.resources or ()):
            problem = _wildcard_problem(resource.split(":", 4), question_mark=question_mark)
            if problem:
                found.append(f"{at}.Resource[{position}]: {problem}")
        for condition in statement.conditions:
            if condition.operator in GLOB_OPERATORS:
                for value in condition.values:
                    problem = _wildcard_problem([value], question_mark=True)
                    if problem:
                        found.append(f"{at}.Condition.{condition.text}.{condition.key}: {value[:40]!r}: {problem}")
    return found


def _resource_problem(resource: str) -> str | None:
    if not resource.strip():
        return "must not be blank"
    if len(resource) > MAX_RESOURCE_CHARS:
        return f"longer than {MAX_RESOURCE_CHARS} characters"
    if any(char.isspace() for char in resource) and not has_variables(resource):
        return "must not contain spaces"
    segments = resource.split(":", 4)
    if len(segments) != 5:
        return f"{resource[:60]!r} must have the form service:region:account:type:path"
    if not segments[0] or not segments[1]:
        return "service and region segments are required (use * for any region)"
    return None


def _conditions(at: str, block: object, present: bool, version: str, problems: list[str]) -> list[Condition]:
    if not present:
        return []
    where = f"{at}.Condition"
    if not isinstance(block, dict) or not block:
        problems.append(f"{where}: must be a non-empty JSON object")
        return []
    conditions: list[Condition] = []
    for operator_name, keys in block.items():
        here = f"{where}.{operator_name}"
        parsed = parse_operator(operator_name)
        if parsed is None:
            problems.append(f"{here}: unknown condition operator")
            continue
        operator = parsed[0]
        if keys is None:
            problems.append(f"{here}: operator value must not be null")
            continue
        if not isinstance(keys, dict) or not keys:
            problems.append(f"{here}: must be a JSON object of condition keys")
            continue
        for key, values in keys.items():
            there = f"{here}.{key}"
            listed = _string_list(there, values, problems, MAX_CONDITION_VALUES)
            if listed is None:
                continue
            expected = KEY_TYPES.get(key.lower())
            if expected and operator.category not in ("string", "null", expected):
                problems.append(f"{there}: key of type {expected} does not fit the {operator.category} operator")
                continue
            bad = [v for v in listed if len(v) > MAX_CONDITION_CHARS]
            if bad:
                problems.append(f"{there}: a value is longer than {MAX_CONDITION_CHARS} characters")
                continue
            for value in listed:
                if not has_variables(value) and not _value_fits(operator.category, value):
                    problems.append(f"{there}: {value[:40]!r} is not a valid {operator.category} value")
                    break
            else:
                conditions.append(Condition.build(operator_name, key, listed, version))
    if len(conditions) > MAX_CONDITIONS:
        problems.append(f"{where}: {len(conditions)} conditions, at most {MAX_CONDITIONS}")
    return conditions


_PROBES = {"number": "NumberEquals", "date": "DateEquals", "bool": "Bool", "null": "Null", "ip": "IpAddress"}


def _value_fits(category: str, value: str) -> bool:
    if category == "string":
        return True
    try:
        OPERATORS[_PROBES[category]].policy_value(value)
    except ValueError:
        return False
    return True
