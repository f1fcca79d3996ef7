"""Glob patterns of actions (``modelarts:*:delete*``), resources and ``StringLike``/``StringMatch`` values."""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["glob_escape", "glob_regex", "is_glob"]


def is_glob(text: str, *, question_mark: bool = True) -> bool:
    """Whether ``text`` needs a regex: it has wildcards (or literal markers from :func:`glob_escape`)."""
    return "*" in text or (question_mark and "?" in text) or _LITERAL_STAR in text or _LITERAL_QUESTION in text


# Substituted variable text must match literally, while the policy author's own text has no escape syntax:
# its '*' and '?' are marked with private-use characters that glob_regex turns back into literals.
_LITERAL_STAR, _LITERAL_QUESTION = "\ue000", "\ue001"


def glob_escape(text: str) -> str:
    """Text inserted into a pattern (a substituted variable) must match literally."""
    return text.replace("*", _LITERAL_STAR).replace("?", _LITERAL_QUESTION)


@lru_cache(maxsize=4096)
def glob_regex(pattern: str, *, question_mark: bool = True, stop: str = "") -> re.Pattern[str]:
    """``*`` = any run of characters (not crossing ``stop``), ``?`` = exactly one; no escape syntax."""
    parts: list[str] = []
    any_run = f"[^{re.escape(stop)}]*" if stop else ".*"
    one = f"[^{re.escape(stop)}]" if stop else "."
    for char in pattern:
        if char == _LITERAL_STAR:
            parts.append(re.escape("*"))
        elif char == _LITERAL_QUESTION:
            parts.append(re.escape("?"))
        elif char == "*":
            parts.append(any_run)
        elif char == "?" and question_mark:
            parts.append(one)
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)
