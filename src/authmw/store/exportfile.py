"""The export file: YAML laid out one row per line, each row a JSON flow mapping.

Any YAML tool reads it, a diff shows one changed row per changed line, and authmw reads its own layout back
with ``json.loads`` per line, about a hundred times faster than a YAML loader (PyYAML builds and resolves a
node per scalar in Python): a store of 100,000 users and 200,000 keys loads in about a second, not a minute.
Files in any other YAML layout, or JSON, are read too, through a safe loader that refuses aliases.
"""

from __future__ import annotations

import json
import re
from typing import Any

from authmw.extras import missing_extra

__all__ = ["ExportFileError", "dumps", "loads"]

# An alias is "*name" where a node starts; text without this has none, and the event scan is skipped.
_MAYBE_ALIAS = re.compile(r"(?:^|[\s\[{,]|[\"']:)\*", re.MULTILINE)
_KEY = re.compile(r"[a-z_]+")
# JSON leaves these raw; YAML refuses them (DEL, C1 controls, U+FFFE/U+FFFF) or reads them as line breaks
# (NEL, U+2028, U+2029), so they are written as \u escapes, which JSON and YAML read alike.
_ESCAPE = {c: f"\\u{c:04x}" for c in (*range(0x7F, 0xA0), 0x2028, 0x2029, 0xFFFE, 0xFFFF)}


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False).translate(_ESCAPE)


class ExportFileError(ValueError):
    """Not a readable export file (the message says why, in one line)."""


class _NotOurLayout(Exception):
    pass


def dumps(document: dict[str, Any]) -> str:
    """The document as YAML: top-level scalars as JSON strings, each list item on a line of its own."""
    lines = []
    for key, value in document.items():
        if isinstance(value, list):
            lines.append(f"{key}:" if value else f"{key}: []")
            lines.extend(f"- {_json(row)}" for row in value)
        else:
            lines.append(f"{key}: {_json(value)}")
    return "\n".join(lines) + "\n"


def loads(text: str) -> Any:
    """A document from :func:`dumps` output, JSON, or any other (alias-free) YAML."""
    try:
        return _own_layout(text)
    except _NotOurLayout:
        pass
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError:
            pass  # YAML flow mappings start with "{" too
    return _yaml(text)


def _own_layout(text: str) -> dict[str, Any]:
    document: dict[str, Any] = {}
    rows: list[Any] | None = None
    try:
        for line in text.removesuffix("\n").split("\n"):
            if line.startswith("- ") and rows is not None:
                rows.append(json.loads(line[2:]))
                continue
            key, colon, rest = line.partition(":")
            if not colon or not _KEY.fullmatch(key) or key in document or (rest and not rest.startswith(" ")):
                raise _NotOurLayout
            rest = rest.strip()
            if rest:
                document[key], rows = json.loads(rest), None
            else:
                rows = document[key] = []
    except ValueError:
        raise _NotOurLayout from None
    if not document:
        raise _NotOurLayout
    return document


def _yaml(text: str) -> Any:
    try:
        import yaml
    except ImportError as exc:
        missing = missing_extra(exc, feature="reading YAML in another layout")
        if missing is None:
            raise
        raise ExportFileError(str(missing)) from None
    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        if _MAYBE_ALIAS.search(text) and any(
            isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=loader)
        ):
            raise ExportFileError("YAML aliases are not accepted in an export")
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise ExportFileError(f"not valid YAML ({str(exc).splitlines()[0]})") from None
