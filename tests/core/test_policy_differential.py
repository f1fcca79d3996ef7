"""Differential property test: a plain reference evaluator versus the compiled, indexed and cached PolicySet.

The reference below is written from the documented rules only (``research/access_model.md`` §1.3-§1.7 and §2,
the ``conventions`` of ``conformance/policy/policy_cases.json``) and reads the raw JSON documents itself; it
shares no code with ``authmw.policy`` (``parse_policy`` only checks that generated documents are valid and
builds the engine's input). It is deliberately slow and literal: globs are matched token by token, there is
no index and no cache. It is itself checked against every documented conformance case.

Each generated case (10,000 of them, plus 1,000 with a two-entry cache) is 1-3 valid policies of 1-8
statements and 1-4 requests; every request is decided by the reference, by an uncached PolicySet and twice by
a cached one (the second call is a cache hit, and later requests of a case reuse the same cache). Allowed and
explicit must agree, and the statement the engine names must be one the reference found applicable with the
same effect.

Where the documents are silent, the reference follows what ``authmw`` documents or does, namely:

- an empty request value (``""`` or ``[]``) counts as absent for every operator, not only for ``IfExists``
  and the ``ForAnyValue``/``ForAllValues`` prefixes;
- with an absent key the prefix decides before ``IfExists`` (``ForAnyValue:StringEqualsIfExists`` is false);
- a plain operator given a list request value holds if any request value satisfies it;
- a request value of the wrong type (``"abc"`` for a Number operator) makes the whole condition false, even
  for negated operators, and even when only one element of a request list has the wrong type;
- a policy value whose variable cannot be substituted (or is not of the operator's type once substituted)
  is dropped; a condition whose every value was dropped is false; a request list (even of one value) is
  multi-valued and never substitutes (``research/access_model.md`` §1.7);
- ``?`` is a wildcard in Resource segments of Version 5.0 documents only (as in actions);
- ``*`` and ``?`` are wildcards in StringLike/StringMatch values of both versions, and nothing escapes them.

- a JSON number given for a Date operator is a value of the wrong type (dates are ISO 8601 text), and
  ``${key, 'default'}`` takes its default when the request has ``key: []``.

``REGRESSIONS`` at the end pins a minimal reproducer of every disagreement this test has found (all fixed).
"""

from __future__ import annotations

import ipaddress
import json
import random
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from authmw.policy import PolicySet, parse_policy
from tests.support import budget
from tests.support.policy_cases import CASES

# --------------------------------------------------------------------------------------------------------------
# Reference evaluator
# --------------------------------------------------------------------------------------------------------------

# Judgement calls where the documents are silent (see the module docstring), as switches:
#: A JSON number given for a Date operator would be epoch seconds (as in AWS) rather than a wrong-typed value.
EPOCH_NUMBERS_ARE_DATES = False
#: ``${key, 'default'}`` uses the default when the request has ``key: []`` (``[]`` counts as absent elsewhere).
EMPTY_LIST_TAKES_DEFAULT = True

STAR = object()  # glob token: any run of characters
ONE = object()  # glob token: exactly one character
FAILED = object()  # a variable could not be substituted
ABSENT = object()  # the request has no value for a key


def glob_matches(tokens: list[Any], text: str) -> bool:
    """``tokens`` (STAR, ONE or single literal characters) match the whole of ``text``."""
    memo: dict[tuple[int, int], bool] = {}

    def match(i: int, j: int) -> bool:
        if (i, j) not in memo:
            if i == len(tokens):
                result = j == len(text)
            elif tokens[i] is STAR:
                result = match(i + 1, j) or (j < len(text) and match(i, j + 1))
            elif tokens[i] is ONE:
                result = j < len(text) and match(i + 1, j + 1)
            else:
                result = j < len(text) and text[j] == tokens[i] and match(i + 1, j + 1)
            memo[i, j] = result
        return memo[i, j]

    return match(0, 0)


def wildcard_tokens(text: str, *, question_mark: bool) -> list[Any]:
    """Tokens of a pattern typed by the policy author: ``*`` and (if enabled) ``?`` are wildcards."""
    tokens: list[Any] = []
    for char in text:
        if char == "*":
            tokens.append(STAR)
        elif char == "?" and question_mark:
            tokens.append(ONE)
        else:
            tokens.append(char)
    return tokens


def scalar_text(value: object) -> str:
    """A request scalar as text: booleans are ``true``/``false``, numbers as written in JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return str(value)


def lower_keys(context: Mapping[str, Any]) -> dict[str, Any]:
    return {key.lower(): value for key, value in context.items()}


def is_empty(value: object) -> bool:
    return value is ABSENT or value == "" or value == []


VARIABLE_KEY = re.compile(r"[A-Za-z0-9_.:/-]+")


def variable_value(body: str, context: Mapping[str, Any], version: str) -> str | object:
    """The text a ``${body}`` stands for, or FAILED."""
    if body == "$" or (version == "5.0" and body in ("*", "?")):
        return body
    key, comma, default = body.partition(",")
    key = key.strip()
    if not VARIABLE_KEY.fullmatch(key):
        return FAILED
    fallback: str | object = FAILED
    if comma:
        default = default.strip()
        inner = default[1:-1]
        if len(default) < 2 or default[0] != "'" or default[-1] != "'" or "'" in inner.replace("''", ""):
            return FAILED
        fallback = inner.replace("''", "'")
    found = context.get(key.lower(), ABSENT)
    if is_empty(found) and (found != [] or EMPTY_LIST_TAKES_DEFAULT):
        return fallback
    if isinstance(found, list):
        return FAILED  # multi-valued, whatever its length
    return scalar_text(found)


def substitute_parts(text: str, context: Mapping[str, Any], version: str) -> list[tuple[str, str]] | None:
    """``text`` as ``("typed", ...)`` pieces written by the author and ``("inserted", ...)`` substituted ones.

    None if a variable cannot be substituted.
    """
    parts: list[tuple[str, str]] = []
    rest = text
    while "${" in rest:
        before, _, after = rest.partition("${")
        if "}" not in after:
            return None
        body, _, rest = after.partition("}")
        inserted = variable_value(body, context, version)
        if inserted is FAILED:
            return None
        parts += [("typed", before), ("inserted", str(inserted))]
    parts.append(("typed", rest))
    return parts


def parts_tokens(parts: list[tuple[str, str]], *, question_mark: bool) -> list[Any]:
    tokens: list[Any] = []
    for kind, text in parts:
        tokens += wildcard_tokens(text, question_mark=question_mark) if kind == "typed" else list(text)
    return tokens


def action_matches(pattern: str, action: str, version: str) -> bool:
    """Case-insensitive; ``*``/``?`` never cross ``:``, so the three segments are matched one by one."""
    wanted = pattern.lower().split(":")
    given_ = action.lower().split(":")
    if len(wanted) != len(given_):
        return False
    return all(
        glob_matches(wildcard_tokens(w, question_mark=version == "5.0"), g) for w, g in zip(wanted, given_, strict=True)
    )


def split_outside_variables(text: str, limit: int) -> list[str]:
    """Split on the first ``limit`` colons that are not inside a ``${...}``."""
    pieces = [""]
    depth = False
    for index, char in enumerate(text):
        if char == "$" and text[index + 1 : index + 2] == "{":
            depth = True
        elif char == "}":
            depth = False
        if char == ":" and not depth and len(pieces) <= limit:
            pieces.append("")
        else:
            pieces[-1] += char
    return pieces


def resource_matches(pattern: str, resource: str, context: Mapping[str, Any], version: str) -> bool:
    wanted = split_outside_variables(pattern, 4)
    given_ = resource.split(":", 4)
    if len(wanted) != 5 or len(given_) != 5:
        return False
    for segment, value in zip(wanted, given_, strict=True):
        parts = substitute_parts(segment, context, version)
        if parts is None:
            return False
        if not glob_matches(parts_tokens(parts, question_mark=version == "5.0"), value):
            return False
    return True


NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
DATE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,6}))?(Z|[-+][0-9]{2}:[0-9]{2})?)?"
)


def read_number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and NUMBER.fullmatch(value):
        return float(value)
    return None


def read_date(value: object) -> datetime | None:
    """ISO 8601 date or date-time; no zone means UTC."""
    if EPOCH_NUMBERS_ARE_DATES and isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    match = DATE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    zone_info = UTC
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        zone_info = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0").ljust(6, "0")),
            tzinfo=zone_info,
        )
    except ValueError:
        return None


def read_bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def read_network(value: object) -> Any:
    try:
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        return None


def read_address(value: object) -> Any:
    if not isinstance(value, str):
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def read_text(value: object) -> str:
    return scalar_text(value)


def in_network(address: Any, network: Any) -> bool:
    return address.version == network.version and address in network


# family → (read policy value, read request value, compare(request, policy)); a reader returns None if the value
# is not of the family's type.
Reader = Callable[[object], Any]
STRING_OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda r, p: r == p,
    "StringEqualsIgnoreCase": lambda r, p: r.lower() == p.lower(),
    "StringLike": lambda r, p: glob_matches(p, r),  # p: tokens
    "StringMatch": lambda r, p: glob_matches(p, r),
    "StringStartWith": lambda r, p: r.startswith(p),
    "StringEndWith": lambda r, p: r.endswith(p),
}
NEGATIONS = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "StringNotMatch": "StringMatch",
    "StringNotStartWith": "StringStartWith",
    "StringNotEndWith": "StringEndWith",
    "NumberNotEquals": "NumberEquals",
    "DateNotEquals": "DateEquals",
    "NotIpAddress": "IpAddress",
}
ORDERS: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": lambda r, p: r == p,
    "LessThan": lambda r, p: r < p,
    "LessThanEquals": lambda r, p: r <= p,
    "GreaterThan": lambda r, p: r > p,
    "GreaterThanEquals": lambda r, p: r >= p,
}


def base_operator(name: str) -> tuple[str, Reader, Reader, Callable[[Any, Any], bool]]:
    """(family, policy reader, request reader, compare) of a positive operator name."""
    if name in STRING_OPERATORS:
        return "string", read_text, read_text, STRING_OPERATORS[name]
    if name.startswith("Number"):
        return "number", read_number, read_number, ORDERS[name[len("Number") :]]
    if name.startswith("Date"):
        return "date", read_date, read_date, ORDERS[name[len("Date") :]]
    if name == "Bool":
        return "bool", read_bool, read_bool, ORDERS["Equals"]
    if name == "IpAddress":
        return "ip", read_network, read_address, in_network
    raise AssertionError(name)


def split_operator(text: str) -> tuple[str, str, bool, bool]:
    """(set prefix or "", positive base operator, negated, IfExists)."""
    prefix = ""
    for candidate in ("ForAnyValue:", "ForAllValues:"):
        if text.startswith(candidate):
            prefix, text = candidate[:-1], text[len(candidate) :]
    if_exists = text.endswith("IfExists")
    if if_exists:
        text = text[: -len("IfExists")]
    if text.startswith("Numeric"):
        text = "Number" + text[len("Numeric") :]
    negated = text in NEGATIONS
    return prefix, NEGATIONS.get(text, text), negated, if_exists


def policy_values(operator: str, values: list[str], context: Mapping[str, Any], version: str) -> list[Any]:
    _, read_policy, _, _ = base_operator(operator)
    out = []
    for value in values:
        parts = substitute_parts(value, context, version)
        if parts is None:
            continue  # a value whose variable fails never matches
        if operator in ("StringLike", "StringMatch"):
            out.append(parts_tokens(parts, question_mark=True))
            continue
        read = read_policy("".join(text for _, text in parts))
        if read is not None:
            out.append(read)
    return out


def condition_holds(operator_text: str, key: str, values: list[str], context: Mapping[str, Any], version: str) -> bool:
    """One ``operator: {key: values}`` entry; ``context`` has lower-case keys."""
    request = context.get(key.lower(), ABSENT)
    absent = is_empty(request)
    if operator_text == "Null":
        flags = []
        for value in values:
            parts = substitute_parts(value, context, version)
            if parts is not None:
                flags.append(read_bool("".join(text for _, text in parts)))
        return any(flag is not None and flag == absent for flag in flags)
    prefix, operator, negated, if_exists = split_operator(operator_text)
    if absent:
        if prefix == "ForAllValues":
            return True
        if prefix == "ForAnyValue":
            return False
        return if_exists or negated
    wanted = policy_values(operator, values, context, version)
    if not wanted:
        return False
    _, _, read_request, compare = base_operator(operator)
    given_ = [read_request(value) for value in (request if isinstance(request, list) else [request])]
    if any(value is None for value in given_):
        return False  # a request value of the wrong type

    def satisfied(value: Any) -> bool:
        hit = any(compare(value, policy_value) for policy_value in wanted)
        return not hit if negated else hit

    if prefix == "ForAllValues":
        return all(satisfied(value) for value in given_)
    return any(satisfied(value) for value in given_)


def statement_applies(
    statement: Mapping[str, Any], version: str, action: str, resource: str | None, context: Mapping[str, Any]
) -> bool:
    if "NotAction" in statement:
        if any(action_matches(pattern, action, version) for pattern in statement["NotAction"]):
            return False
    elif not any(action_matches(pattern, action, version) for pattern in statement["Action"]):
        return False
    if "Resource" in statement:
        if resource is None:
            return False
        if not any(resource_matches(pattern, resource, context, version) for pattern in statement["Resource"]):
            return False
    for operator_text, keys in statement.get("Condition", {}).items():
        for key, values in keys.items():
            if not condition_holds(operator_text, key, values, context, version):
                return False
    return True


def reference_decide(
    documents: list[dict[str, Any]], action: str, resource: str | None, context: Mapping[str, Any]
) -> tuple[bool, bool, set[tuple[str, int]]]:
    """(allowed, explicit deny, the statements that could be named as deciding: (policy name, index))."""
    lowered = lower_keys(context)
    allows: set[tuple[str, int]] = set()
    denies: set[tuple[str, int]] = set()
    for number, document in enumerate(documents):
        for index, statement in enumerate(document["Statement"]):
            if statement_applies(statement, document["Version"], action, resource, lowered):
                deny = statement["Effect"].lower() == "deny"
                (denies if deny else allows).add((f"p{number}", index))
    if denies:
        return False, True, denies
    if allows:
        return True, False, allows
    return False, False, set()


# --------------------------------------------------------------------------------------------------------------
# Generators
#
# Hypothesis draws the shape of a case (how many policies, statements and requests) and one seed per statement
# and per request; each piece is then built by a plain ``random.Random``. Drawing every detail through Hypothesis
# costs about 50 ms per case, too slow for 10,000 cases; this way shrinking still removes whole policies,
# statements and requests from a failing case. Requests are built from the generated policies (actions,
# resources and condition values instantiated from their patterns) half of the time, so that statements apply
# often and all three outcomes are frequent.
# --------------------------------------------------------------------------------------------------------------

SERVICES = ["modelarts", "obs", "iam"]
TYPES = ["notebook", "trainJob", "bucket"]
OPERATIONS = ["create", "delete", "deleteAll", "list", "get"]
EFFECTS = ["Allow", "allow", "ALLOW", "aLLow", "Deny", "deny", "DENY"]


def random_case(rng: random.Random, text: str) -> str:
    shape = rng.randrange(6)
    if shape == 0:
        return text.upper()
    if shape == 1:
        return text.lower()
    if shape == 2:
        return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in text)
    return text


def wildcard_segment(rng: random.Random, word: str, question_mark: bool) -> str:
    """``word`` with some of it replaced by ``*`` (and ``?`` in Version 5.0)."""
    cut = rng.randrange(len(word) + 1)
    shapes = ["*", word[:cut] + "*", "*" + word[cut:], word[:cut] + "*" + word[cut + 1 :], word[:cut] + "**"]
    if question_mark:
        position = rng.randrange(len(word))
        shapes += [word[:position] + "?" + word[position + 1 :], "?" * len(word), word[:cut] + "?*", "*?"]
    return rng.choice(shapes)


def random_action_pattern(rng: random.Random, version: str) -> str:
    segments = [rng.choice(SERVICES), rng.choice(TYPES), rng.choice(OPERATIONS)]
    if rng.random() < 0.5:  # wildcards in some segments; otherwise an exact action (the engine's dict lookup)
        segments = [
            wildcard_segment(rng, segment, version == "5.0") if rng.random() < 0.5 else segment for segment in segments
        ]
    if rng.random() < 0.1:
        segments = ["*", "*", "*"]
    return ":".join([segments[0], random_case(rng, segments[1]), random_case(rng, segments[2])])


def words(text: str) -> list[str]:
    return text.split()


RESOURCE_PATTERN_SEGMENTS = [
    words("obs modelarts * o*"),
    words("* cn-north-1 eu-west-0 cn-*"),
    ["*", "123", "", "12*"],
    words("bucket object * b?cket"),
    ["", *words(r"* TestBucket* my-bucket/* my-bucket/a/b *b* a?c a*c x:* */x a\b a\*")],
]
RESOURCE_VARIABLE_PATHS = ["${g:UserName}", "home/${G:USERNAME}/*", "${g:UserName, 'shared'}", "${g:TagKeys}/*"]
REQUEST_RESOURCE_SEGMENTS = [
    words("obs modelarts OBS"),
    words("cn-north-1 eu-west-0 cn-east-3"),
    ["123", "456", "", "12"],
    words("bucket object Bucket bcket"),
    [
        "",
        *words(
            r"TestBucket TestBucket1 testbucket my-bucket/a/b my-bucket/x abc a?c axc ac alice home/alice/x"
            r" home/bob/x shared a:b x:y * a/b/x a\b ab a\xyz a*"
        ),
    ],
]


def random_resource_pattern(rng: random.Random, variables: bool) -> str:
    segments = [rng.choice(choices) for choices in RESOURCE_PATTERN_SEGMENTS]
    if variables and rng.random() < 0.25:
        segments[4] = rng.choice(RESOURCE_VARIABLE_PATHS)
    return ":".join(segments)


# Condition keys and the type of the values a request usually carries for them. The typed global keys accept
# only the string and Null operators and those of their own type (the validator enforces it); the "ma:" keys
# are untyped and accept every operator.
KEYS = {
    "g:UserName": "string",
    "g:TagKeys": "list",
    "ma:str": "string",
    "g:MFAAge": "number",
    "ma:num": "number",
    "g:CurrentTime": "date",
    "ma:date": "date",
    "g:MFAPresent": "bool",
    "ma:flag": "bool",
    "g:SourceIp": "ip",
    "ma:ip": "ip",
}
TYPED_GLOBAL_KEYS = {
    "g:UserName": "string",
    "g:TagKeys": "string",
    "g:MFAAge": "number",
    "g:CurrentTime": "date",
    "g:MFAPresent": "bool",
    "g:SourceIp": "ip",
}
POLICY_VALUES = {
    "string": ["", *words(r"alice Alice bob al a* *ce a?ice * ? ärger x/* 1 true 1.0 a\b a\*")],
    "number": words("0 1 1.5 -2 10 3.0 1e1 2"),
    "date": words(
        "2024-01-01T00:00:00Z 2024-06-01T12:00:00+02:00 2024-06-01 2024-06-01T10:00:00Z 2025-01-01T00:00:00"
        " 2024-06-01T10:00:00.5Z"
    ),
    "bool": words("true false True FALSE"),
    "ip": words("10.0.0.0/8 10.1.2.3 10.1.2.3/32 192.168.0.0/16 0.0.0.0/0 ::1 2001:db8::/32 ::/0"),
    "null": words("true false TRUE False"),
}
VARIABLE_VALUES = [
    *words("${g:UserName} home/${g:username}/* ${$} a${$}b ${*} ${?} ${bad ${} ${ma:num} ${g:TagKeys} ${g:UserName}*"),
    *["${ma:str, 'alice'}", "${G:USERNAME, 'bob'}", "${ma:num, '1'}", "${ g:UserName }", "${g:UserName,'it''s'}"],
    *["${ma:flag, 'true'}", "${ma:date, '2024-06-01'}", "${ma:ip, '10.1.2.3'}"],
]
# Requests carry strings mostly, and numbers, booleans and lists as the CLI and the middleware may pass them.
REQUEST_VALUES: dict[str, list[Any]] = {
    "string": [
        "",
        *words(
            r"alice Alice ALICE bob al alice/x x/alice a?ice Ärger 1 true a* it's home/alice/x 1.0 shared a\b a\xyz ab"
        ),
    ],
    "number": ["", 1, 1.0, 10, 2.5, True, False, 0, *words("1 1.0 2 10 -2 0 abc 1.2.3 1e1")],
    "date": [
        "",
        1717236000,
        *words("2024-06-01T10:00:00Z 2023-12-31T23:59:59Z 2024-06-01 2024-06-01T12:00:00+02:00 2025-01-01T00:00:00"),
        *words("2024-06-01T10:00:00.5Z abc 2024-13-01"),
    ],
    "bool": ["", True, False, 1, 0, *words("true false TRUE False yes")],
    "ip": ["", *words("10.1.2.3 10.200.0.1 192.168.1.1 8.8.8.8 ::1 2001:db8::5 ::ffff:10.1.2.3 abc 10.0.0.0/8")],
}
REQUEST_VALUES["list"] = REQUEST_VALUES["string"]
ORDERS_WRITTEN = ("Equals", "NotEquals", "LessThan", "LessThanEquals", "GreaterThan", "GreaterThanEquals")
BASE_OPERATORS = {
    "string": [f"String{n}{o}" for o in ("Equals", "EqualsIgnoreCase", "Like", "Match") for n in ("", "Not")]
    + [f"String{n}{o}" for o in ("StartWith", "EndWith") for n in ("", "Not")],
    "number": [f"{stem}{order}" for stem in ("Number", "Numeric") for order in ORDERS_WRITTEN],
    "date": [f"Date{order}" for order in ORDERS_WRITTEN],
    "bool": ["Bool"],
    "ip": ["IpAddress", "NotIpAddress"],
    "null": ["Null"],
}
FAMILIES = sorted(BASE_OPERATORS)
KEYS_FOR = {
    family: [k for k in KEYS if k not in TYPED_GLOBAL_KEYS or family in ("string", "null", TYPED_GLOBAL_KEYS[k])]
    for family in FAMILIES
}


def random_condition(rng: random.Random, variables: bool) -> dict[str, dict[str, list[str]]]:
    block: dict[str, dict[str, list[str]]] = {}
    for _ in range(rng.randint(1, 3)):
        family = rng.choice(FAMILIES)
        negated = [name for name in BASE_OPERATORS[family] if "Not" in name]
        operator = rng.choice(negated if negated and rng.random() < 0.4 else BASE_OPERATORS[family])
        if family != "null":  # Null takes neither a set prefix nor IfExists
            operator = rng.choice(["", "", "ForAnyValue:", "ForAllValues:"]) + operator
            operator += rng.choice(["", "", "IfExists"])
        keys = block.setdefault(operator, {})
        for _ in range(rng.randint(1, 2)):
            pool = POLICY_VALUES[family]
            if variables and rng.random() < 0.3:
                pool = pool + VARIABLE_VALUES
            key = random_case(rng, rng.choice(KEYS_FOR[family]))
            keys[key] = [rng.choice(pool) for _ in range(rng.randint(1, 3))]
    return block


def random_statement(rng: random.Random, version: str, variables: bool) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": rng.choice(EFFECTS)}
    field = "NotAction" if rng.random() < 0.25 else "Action"
    statement[field] = [random_action_pattern(rng, version) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.3:
        statement["Resource"] = [random_resource_pattern(rng, variables) for _ in range(rng.randint(1, 2))]
    if rng.random() < 0.6:
        statement["Condition"] = random_condition(rng, variables)
    if version == "5.0" and rng.random() < 0.25:
        statement["Sid"] = f"S{rng.randrange(100)}"
    return statement


def make_document(version: str, seeds: list[int], variables: bool = True) -> dict[str, Any]:
    return {"Version": version, "Statement": [random_statement(random.Random(s), version, variables) for s in seeds]}


def instantiate(rng: random.Random, pattern: str, filler: str) -> str:
    """A text matched by ``pattern`` (or nearly: wildcards are filled from ``filler``), to make hits frequent."""
    out = []
    for char in pattern:
        if char == "*":
            cut = rng.randrange(len(filler) + 1)
            out.append(rng.choice(["", filler[:cut], filler[cut:], "x"]))
        elif char == "?":
            out.append(rng.choice([*filler, "q"]) if filler else "q")
        else:
            out.append(char)
    return "".join(out)


def random_action(rng: random.Random, docs: list[dict[str, Any]]) -> str:
    patterns = [p for d in docs for s in d["Statement"] for p in s.get("Action", s.get("NotAction", []))]
    if rng.random() < 0.5:
        parts = [rng.choice([*SERVICES, "ecs"]), rng.choice(TYPES), rng.choice([*OPERATIONS, "deleteAllX", "gets"])]
    else:
        parts = [
            instantiate(rng, segment, rng.choice(pool))
            for segment, pool in zip(rng.choice(patterns).split(":"), (SERVICES, TYPES, OPERATIONS), strict=True)
        ]
    shape = rng.randrange(20)
    if shape == 0:
        parts = parts[:2]
    elif shape == 1:
        parts.append("x")
    return random_case(rng, ":".join(parts))


def fill(rng: random.Random, parts: list[tuple[str, str]], filler: str) -> str:
    """Text for substituted ``parts``: wildcards the author typed are filled in, inserted text kept as it is."""
    return "".join(instantiate(rng, text, filler) if kind == "typed" else text for kind, text in parts)


def random_resource(rng: random.Random, docs: list[dict[str, Any]], context: dict[str, Any]) -> str | None:
    patterns = [p for d in docs for s in d["Statement"] for p in s.get("Resource", [])]
    draw = rng.random()
    if draw < 0.2:
        return None
    if patterns and draw < 0.6:
        segments = []
        for segment, pool in zip(
            split_outside_variables(rng.choice(patterns), 4), REQUEST_RESOURCE_SEGMENTS, strict=True
        ):
            parts = substitute_parts(segment, lower_keys(context), "1.1")
            segments.append(rng.choice(pool) if parts is None else fill(rng, parts, rng.choice(pool)))
    else:
        segments = [rng.choice(choices) for choices in REQUEST_RESOURCE_SEGMENTS]
    if rng.random() < 0.05:
        segments = segments[:4]
    return ":".join(segments)


def condition_keys(docs: list[dict[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    """Lower-case condition key → [(operator, value)] written for it in ``docs``."""
    found: dict[str, list[tuple[str, str]]] = {}
    for document in docs:
        for statement in document["Statement"]:
            for operator, keys in statement.get("Condition", {}).items():
                for key, values in keys.items():
                    found.setdefault(key.lower(), []).extend((operator, value) for value in values)
    return found


SUBSTITUTED = ["alice", "bob", "shared", "it's", "home/alice/x", "a$b", "$", "*", "?", "1", "true", "alice*"]
SUBSTITUTED += ["10.1.2.3", "2024-06-01"]


def value_like(rng: random.Random, operator: str, written: str) -> Any:
    """A request value that will often satisfy ``operator`` with the policy value ``written``."""
    if "${" in written:
        return rng.choice(SUBSTITUTED)
    if operator.endswith("Null"):
        return rng.choice(REQUEST_VALUES["string"])
    if "String" in operator:
        return instantiate(rng, written, rng.choice(["alice", "bob", "ce"])) if rng.random() < 0.7 else written
    if "Ip" in operator:
        return written.partition("/")[0]
    if "Number" in operator or "Numeric" in operator:
        number = float(written)
        return rng.choice([written, number, int(number), number + rng.choice([-1, 0.5, 1])])
    if "Date" in operator:
        return written if rng.random() < 0.7 else written.replace("2024", "2023")
    return rng.choice([written, written.lower(), read_bool(written)])


def random_context(rng: random.Random, docs: list[dict[str, Any]]) -> dict[str, Any]:
    written = condition_keys(docs)
    names = {name.lower(): name for name in KEYS}

    def one_value(key: str, kind: str, wrong: float) -> Any:  # wrong: how often the value is of another type
        if key in written and rng.random() < 1 - 2 * wrong:
            return value_like(rng, *rng.choice(written[key]))
        return rng.choice(REQUEST_VALUES[rng.choice(sorted(REQUEST_VALUES)) if rng.random() < wrong else kind])

    context: dict[str, Any] = {}
    for key in sorted({*names, *written}):
        if rng.random() < (0.5 if key in written else 0.25):
            continue  # a missing key
        kind = KEYS.get(names.get(key, ""), "string")
        if kind == "list" or rng.random() < 0.25:
            context[key] = [one_value(key, kind, 0.05) for _ in range(rng.choice([0, 1, 1, 2, 2, 3]))]
        else:
            context[key] = one_value(key, kind, 0.2)
    # Give condition keys the value a variable in their policy values stands for, now that the context is known.
    for key, entries in written.items():
        templates = [value for operator, value in entries if "${" in value and operator != "Null"]
        if templates and rng.random() < 0.5:
            parts = substitute_parts(rng.choice(templates), context, rng.choice(["1.1", "5.0"]))
            if parts is not None:
                context[key] = fill(rng, parts, rng.choice(["alice", ""]))
    return {random_case(rng, names.get(key, key)): value for key, value in context.items()}


# Values that are equal (and hash alike) in Python but are different request values: a cache keyed on them
# would answer for one what it computed for the other.
TWINS: list[list[Any]] = [[True, 1, 1.0, "1", "true"], [False, 0, 0.0, "0", "false"], [10, 10.0, "10", "1e1"]]


def twin_of(rng: random.Random, value: Any) -> Any:
    for group in TWINS:
        if any(type(value) is type(member) and value == member for member in group):
            return rng.choice(group)
    if isinstance(value, list):
        return [twin_of(rng, item) for item in value]
    return rng.choice([*TWINS[rng.randrange(len(TWINS))], value])


def make_request(
    seed: int, docs: list[dict[str, Any]], previous: tuple[str, str | None, dict[str, Any]] | None = None
) -> tuple[str, str | None, dict[str, Any]]:
    """A new request, or (half of the time) one that differs from ``previous`` in a single context value."""
    rng = random.Random(seed)
    if previous is None or rng.random() < 0.5 or not previous[2]:
        context = random_context(rng, docs)
        return random_action(rng, docs), random_resource(rng, docs, context), context
    action, resource, context = previous
    key = rng.choice(sorted(context))
    return action, resource, {**context, key: twin_of(rng, context[key])}


SEEDS = st.integers(0, 2**32 - 1)
DOCUMENTS = st.tuples(st.sampled_from(["1.1", "5.0"]), st.lists(SEEDS, min_size=1, max_size=8))
POLICY_SETS = st.lists(DOCUMENTS, min_size=1, max_size=3)
REQUESTS = st.lists(SEEDS, min_size=1, max_size=4)


def build(shapes: list[tuple[str, list[int]]], request_seeds: list[int], *, variables: bool = True) -> Any:
    docs = []
    for version, seeds in shapes:
        document = make_document(version, seeds, variables)
        while len(json.dumps(document, ensure_ascii=False)) > 6144:  # the validator's size limit
            document["Statement"].pop()
        docs.append(document)
    asked: list[tuple[str, str | None, dict[str, Any]]] = []
    for seed in request_seeds:
        asked.append(make_request(seed, docs, asked[-1] if asked else None))
    return docs, asked


# --------------------------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------------------------


def compare(
    docs: list[dict[str, Any]], asked: list[tuple[str, str | None, dict[str, Any]]], *, cache_size: int = 10_000
) -> list[tuple[bool, bool]]:
    """Check every request against the reference; the outcomes (allowed, explicit) are returned for statistics."""
    # The engine's semantics, not the wildcard limits, are under test: documents over them (as stored before
    # the limits existed) must decide the same way.
    policies = [
        parse_policy(document, name=f"p{number}", wildcard_limits=False) for number, document in enumerate(docs)
    ]
    cached = PolicySet(policies, cache_size=cache_size)
    fresh = PolicySet(policies, cache_size=0)
    outcomes = []
    for action, resource, context in asked:
        allowed, explicit, deciding = reference_decide(docs, action, resource, context)
        outcomes.append((allowed, explicit))
        shown = json.dumps({"policies": docs, "action": action, "resource": resource, "context": context})
        for label, engine in (("uncached", fresh), ("cached", cached), ("cached again", cached)):
            decision = engine.decide(action, resource, context)
            expected = f"expected allowed={allowed} explicit={explicit}"
            assert (decision.allowed, decision.explicit) == (allowed, explicit), (
                f"{label}: {expected}, engine: {decision.reason}\n{shown}"
            )
            if allowed or explicit:
                assert (decision.policy, decision.statement) in deciding, f"{label}: {decision}\n{shown}"
            else:
                assert (decision.policy, decision.statement) == (None, None), f"{label}: {decision}\n{shown}"
    return outcomes


def _settings(examples: int) -> settings:
    return settings(
        max_examples=budget.examples(examples),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.mark.slow
@_settings(10_000)
@given(shapes=POLICY_SETS, request_seeds=REQUESTS)
def test_engine_agrees_with_reference(shapes: list[tuple[str, list[int]]], request_seeds: list[int]) -> None:
    docs, asked = build(shapes, request_seeds)
    for allowed, explicit in compare(docs, asked):
        event("allow" if allowed else "explicit deny" if explicit else "implicit deny")


@_settings(1_000)
@given(shapes=POLICY_SETS, request_seeds=st.lists(SEEDS, min_size=2, max_size=6))
def test_engine_agrees_with_reference_under_cache_eviction(
    shapes: list[tuple[str, list[int]]], request_seeds: list[int]
) -> None:
    docs, asked = build(shapes, request_seeds)
    compare(docs, asked, cache_size=2)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["id"])
def test_reference_decides_the_documented_cases(case: dict[str, Any]) -> None:
    """The reference itself is checked against the documented cases before it judges the engine."""
    request = case["request"]
    allowed, _, _ = reference_decide(
        case["policies"], request["action"], request.get("resource"), request.get("context") or {}
    )
    assert ("allow" if allowed else "deny") == case["expected"]


def _one(statement: dict[str, Any], version: str = "1.1") -> list[dict[str, Any]]:
    return [{"Version": version, "Statement": [{"Effect": "Allow", "Action": ["obs:bucket:get"], **statement}]}]


GET = "obs:bucket:get"
ALLOW, IMPLICIT = (True, False), (False, False)
# Minimal reproducers of the disagreements found so far: (policies, requests, outcomes the reference gives).
# "bug": the engine contradicts a documented rule; "choice": the documents are silent, the engine chose otherwise.
REGRESSIONS = [
    pytest.param(
        _one({"Condition": {"Null": {"ma:x": ["true", "${g:UserName}"]}}}),
        [(GET, None, {})],
        [ALLOW],
        id="fixed-null-with-a-variable-ignores-every-value",
    ),
    pytest.param(
        _one({"Condition": {"Null": {"ma:x": ["${ma:flag, 'true'}"]}}}),
        [(GET, None, {})],
        [ALLOW],
        id="fixed-null-variable-is-not-substituted",
    ),
    pytest.param(
        _one({"Condition": {"Bool": {"ma:flag": ["false"]}}}),
        [(GET, None, {"ma:flag": False}), (GET, None, {"ma:flag": 0})],
        [ALLOW, IMPLICIT],
        id="fixed-cache-confuses-false-and-0",
    ),
    pytest.param(
        _one({"Condition": {"StringEquals": {"ma:n": ["1"]}}}),
        [(GET, None, {"ma:n": 1}), (GET, None, {"ma:n": 1.0})],
        [ALLOW, IMPLICIT],
        id="fixed-cache-confuses-1-and-1.0",
    ),
    pytest.param(
        _one({"Condition": {"StringLike": {"ma:s": ["a\\b"]}}}),
        [(GET, None, {"ma:s": "a\\b"}), (GET, None, {"ma:s": "ab"})],
        [ALLOW, IMPLICIT],
        id="fixed-backslash-escapes-in-stringlike",
    ),
    pytest.param(
        _one({"Resource": ["obs:*:*:bucket:a\\b"]}),
        [(GET, "obs:r:1:bucket:a\\b", {}), (GET, "obs:r:1:bucket:ab", {})],
        [ALLOW, IMPLICIT],
        id="fixed-backslash-escapes-in-resource",
    ),
    pytest.param(
        _one({"Condition": {"DateLessThan": {"ma:when": ["2024-01-01T00:00:00Z"]}}}),
        [(GET, None, {"ma:when": "1"}), (GET, None, {"ma:when": 1})],
        [IMPLICIT, IMPLICIT],
        id="choice-number-as-epoch-date",
    ),
    pytest.param(
        _one({"Condition": {"StringEquals": {"ma:s": ["${ma:v, 'd'}"]}}}),
        [(GET, None, {"ma:s": "d", "ma:v": ""}), (GET, None, {"ma:s": "d", "ma:v": []})],
        [ALLOW, ALLOW],
        id="choice-empty-list-takes-the-default",
    ),
]


@pytest.mark.parametrize(("docs", "asked", "outcomes"), REGRESSIONS)
def test_fixed_disagreements_stay_fixed(docs: list[dict[str, Any]], asked: list[Any], outcomes: list[Any]) -> None:
    assert [reference_decide(docs, *request)[:2] for request in asked] == outcomes
    assert compare(docs, asked) == outcomes
