"""Policy variables: ``${g:UserName}``, ``${key, 'default'}``, ``${$}`` (and ``${*}``, ``${?}`` in 5.0).

Substitution is a single pass; a key that is absent (without a default) or multi-valued (any list, even of one
value: ``research/access_model.md`` §1.7), or a malformed variable, makes the whole value unusable
(:data:`FAILED`): the resource or condition value then matches nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Final

__all__ = ["FAILED", "has_variables", "substitute"]

FAILED: Final = None
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_BODY = re.compile(r"\s*([A-Za-z0-9_.:/-]+)\s*(?:,\s*'((?:[^']|'')*)'\s*)?", re.ASCII)
_ESCAPES = {"$": "$", "*": "*", "?": "?"}


def has_variables(value: str) -> bool:
    return "${" in value


def substitute(
    value: str, context: Mapping[str, object], *, escape: Callable[[str], str] = str, version: str = "1.1"
) -> str | None:
    """``value`` with every variable replaced (``escape`` applied to what is inserted), or :data:`FAILED`.

    ``context`` keys must be lower-case (condition keys are case-insensitive).
    """
    out: list[str] = []
    pos = 0
    for match in _VARIABLE.finditer(value):
        out.append(value[pos : match.start()])
        body = match.group(1)
        if body in _ESCAPES and (body == "$" or version == "5.0"):
            out.append(escape(_ESCAPES[body]))
        else:
            parsed = _BODY.fullmatch(body)
            if parsed is None:
                return FAILED
            key, default = parsed.group(1).lower(), parsed.group(2)
            found = context.get(key)
            if found is None or found in ("", [], ()):
                if default is None:
                    return FAILED
                out.append(escape(default.replace("''", "'")))
            elif isinstance(found, str | int | float):
                out.append(escape(_text(found)))
            else:
                return FAILED  # a multi-valued key (a list, even of one value) never substitutes
        pos = match.end()
    rest = value[pos:]
    if "${" in rest:  # an unclosed variable
        return FAILED
    out.append(rest)
    return "".join(out)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
