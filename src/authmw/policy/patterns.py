"""Glob patterns of actions (``modelarts:*:delete*``), resources and ``StringLike``/``StringMatch`` values."""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["glob_escape", "glob_regex", "is_glob"]


def is_glob(text: str, *, question_mark: bool = True) -> bool:
    return "*" in text or (question_mark and "?" in text)


def glob_escape(text: str) -> str:
    """Text inserted into a pattern (a substituted variable) must match literally."""
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")


@lru_cache(maxsize=4096)
def glob_regex(pattern: str, *, question_mark: bool = True, stop: str = "") -> re.Pattern[str]:
    """``*`` = any run of characters (not crossing ``stop``), ``?`` = exactly one; ``\\`` escapes (variables)."""
    parts: list[str] = []
    any_run = f"[^{re.escape(stop)}]*" if stop else ".*"
    one = f"[^{re.escape(stop)}]" if stop else "."
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            parts.append(re.escape(next(chars, "\\")))
        elif char == "*":
            parts.append(any_run)
        elif char == "?" and question_mark:
            parts.append(one)
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)
