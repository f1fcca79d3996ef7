"""Workspace resolution (the pipeline's workspace step, docs/access-model.md): which workspace a request names,
and who may enter it.

Pure functions the guard calls (no I/O): a request may name its workspace in the path, the query, the
``X-Workspace-Id`` header and its body (every spelling an app or a backend could read); all must agree, and
none means the default workspace. Access follows ModelArts: ``PUBLIC`` admits every user of the owning domain,
``PRIVATE`` the owner and the domain's administrators, ``INTERNAL`` those plus the granted users and groups.
The body is read here as the app would read it (:func:`parse_body`), which also gives the body's actions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl

from authmw.errors import (
    ConflictingWorkspace,
    InvalidWorkspaceId,
    JsonBodyTooLarge,
    MalformedBody,
    WorkspaceDenied,
    WorkspaceNotFound,
)
from authmw.models import AuthType, Principal, Request, Workspace

if TYPE_CHECKING:
    from authmw.routes import Match

__all__ = [
    "DEFAULT_WORKSPACE_ID",
    "WORKSPACE_ID",
    "Form",
    "Member",
    "body_actions",
    "body_workspace_ids",
    "can_access_workspace",
    "parse_body",
    "picks_action",
    "resolve_workspace",
    "workspace_candidates",
]

DEFAULT_WORKSPACE_ID = "0"
#: A workspace id: 32 lower-case hex characters, or the default workspace's "0".
WORKSPACE_ID = re.compile(r"[0-9a-f]{32}|0")
_WORKSPACE_PATH_KEYS = ("workspace_id", "ws_id")  # the ModelArts workspace routes name the workspace in the path
_MISSING: Any = object()
_LEADING_SPACE = re.compile(rb"[ \t\r\n]*").match  # JSON whitespace, found without copying the body
# A body that could name a workspace anywhere: any spelling of the key has the letters "workspace" (in any case),
# unless \u-escaped, or the UTF-8 of "ſ", "K" (Kelvin) or "İ", which case-insensitive matchers (Java's) take for
# s, k and i, and "ı" (dotless), which Java upper-cases to I (see _could_name_workspace).
_SPECIAL_LETTERS = (b"\xc5\xbf", b"\xe2\x84\xaa", b"\xc4\xb0", b"\xc4\xb1")
_FORM = "application/x-www-form-urlencoded"
# Declared binary bodies that no JSON or form reader takes: not read unless they start like JSON.
_OPAQUE = (
    "application/octet-stream",
    "multipart/",
    "image/",
    "audio/",
    "video/",
    "font/",
    "application/zip",
    "application/gzip",
    "application/pdf",
)
# Values a parsed body may hold (each container and each value but the first follows a `,`, `{` or `[`, so
# their count bounds it): the tree and its walk stay within a few MB and tens of ms (json_body_too_large).
_MAX_JSON_VALUES = 20_000


class Member(Protocol):
    """What the access rule reads of whoever enters: a request's :class:`~authmw.models.Principal`, or the owner
    of a notebook an SSH login reaches (who is judged without compiling policies)."""

    @property
    def user_id(self) -> str: ...

    @property
    def domain_id(self) -> str: ...

    @property
    def groups(self) -> frozenset[str]: ...

    @property
    def is_admin(self) -> bool: ...


def can_access_workspace(principal: Member, workspace: Workspace) -> bool:
    """Whether ``principal`` may enter ``workspace`` (the IAM action is checked separately)."""
    if workspace.domain_id is None:
        return workspace.auth_type is AuthType.PUBLIC
    if workspace.domain_id != principal.domain_id:
        return False
    if workspace.auth_type is AuthType.PUBLIC or principal.is_admin or principal.user_id == workspace.owner_id:
        return True
    if workspace.auth_type is AuthType.PRIVATE:
        return False
    return principal.user_id in workspace.granted_users or not workspace.granted_groups.isdisjoint(principal.groups)


def resolve_workspace(
    find: Callable[[str], Workspace | None],
    request: Request,
    match: Match | None,
    in_body: list[Any] | None,
    principal: Principal,
) -> Workspace:
    """The one workspace the request names (path, query, ``X-Workspace-Id``, body: all must agree; none: the
    default), found with ``find`` in the principal's domain, which the principal must be allowed to enter."""
    named: str | None = None
    for value in workspace_candidates(request, match, in_body):
        if not isinstance(value, str) or not WORKSPACE_ID.fullmatch(value):
            raise InvalidWorkspaceId("a workspace id is 32 lower-case hex characters or 0")
        if named is not None and value != named:
            raise ConflictingWorkspace("the request names two different workspaces")
        named = value
    workspace = find(named or DEFAULT_WORKSPACE_ID)
    if workspace is None or (workspace.domain_id is not None and workspace.domain_id != principal.domain_id):
        raise WorkspaceNotFound(f"no workspace {named or DEFAULT_WORKSPACE_ID} in the principal's domain")
    if not can_access_workspace(principal, workspace):
        raise WorkspaceDenied(f"{principal.user_name} may not enter workspace {workspace.id}")
    return workspace


def workspace_candidates(request: Request, match: Match | None, in_body: list[Any] | None) -> list[Any]:
    found: list[Any] = []
    if match is not None:
        found += [match.params[key] for key in _WORKSPACE_PATH_KEYS if key in match.params]
    query = request.query
    if (
        "orkspace" in query.lower() or "%" in query or not query.isascii()
    ):  # the fast path skips queries that cannot name one
        found += [v for k, v in parse_qsl(query, keep_blank_values=True) if _names_workspace(k)]
    header = request.headers.get("x-workspace-id")
    if header is not None:
        found.append(header.strip())
    return found + (in_body or [])


def body_workspace_ids(body: Any, match: Match | None) -> list[Any]:
    """Every value of the JSON body that names a workspace: at the route's ``workspace_fields``, and (the class
    defence: the app or the backend may read any of them) under any key, at any depth and inside arrays, whose
    name is ``workspace_id`` in any case or punctuation (``workspaceId``, ``WORKSPACE-ID``,
    ``os.modelarts/workspace.id``: letters and digits, case-folded, end in ``workspaceid``), and the ``id`` of
    an object held by a key ending in ``workspace`` (``"workspace": {"id": ...}``)."""
    if body is None:
        return []
    if isinstance(body, Form):
        return [value for key, value in body.pairs if _names_workspace(key)]
    found: list[Any] = []
    if match is not None:
        for text in match.route.workspace_fields:
            value = body
            for key in _json_path(text):
                value = value.get(key, _MISSING) if isinstance(value, dict) else _MISSING
            if value is not _MISSING:
                found.append(value)
    stack: list[tuple[Any, bool]] = [(body, False)]  # iterative: a deep body costs no recursion
    letters: dict[str, str] = {}  # this body's keys (bounded by its values): thousands of distinct ones thrash a memo
    while stack:
        value, in_workspace = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                name = letters.get(key)
                if name is None:
                    name = letters[key] = _letters(key)
                if name.endswith("workspaceid") or (in_workspace and name == "id"):
                    found.append(item)
                elif isinstance(item, dict | list):
                    stack.append((item, name.endswith("workspace")))
        elif isinstance(value, list):
            stack.extend((item, in_workspace) for item in value if isinstance(item, dict | list))
    return found


def _names_workspace(key: str) -> bool:
    return _key_letters(key).endswith("workspaceid")


def _key_letters(key: str) -> str:
    # Keys repeat (arrays of objects): short ones are memoised; a long one would pin its text in the memo.
    return _short_key_letters(key) if len(key) <= 64 else _letters(key)


@lru_cache(maxsize=4096)
def _short_key_letters(key: str) -> str:
    return _letters(key)


def _letters(key: str) -> str:
    # casefold: "ſ" and "K" (Kelvin) compare equal to "s" and "k" in case-insensitive matchers (Java's among them)
    folded = key.upper().casefold()  # "ı" upper-cases to "I" (Java's equalsIgnoreCase agrees); casefold keeps it
    if folded.isascii():  # the common case, in C: a body may hold thousands of distinct keys
        return folded.encode().translate(None, _NOT_ALNUM).decode()
    return "".join(c for c in folded if c.isascii() and c.isalnum())


_NOT_ALNUM = bytes(b for b in range(128) if not chr(b).isalnum())


def parse_body(request: Request, match: Match | None, limit: int = 1024 * 1024) -> Any:
    """The body as the app may read it (a JSON object or array, or a :class:`Form`) whenever it could name a
    workspace or pick a body action; else None.

    A body must be read when it mentions ``workspace`` in any case, uses ``\\u`` escapes (which could spell it),
    holds a letter Java's case-insensitive matchers take for an ASCII one (``ſ``, ``K``, ``İ``, ``ı``), names a
    declared ``workspace_fields`` key, or the route has ``body_actions``. Such a body is parsed as strict JSON
    when it starts with ``{`` or ``[`` after JSON whitespace, whatever its content type (apps parse JSON without
    looking), and must not repeat a key at any depth. Otherwise: an ``application/x-www-form-urlencoded`` body is
    read as form fields; a declared binary type (``_OPAQUE``: octet-stream, multipart, images, ...) is not read;
    anything else (no content type, JSON, text, XML, ...) is refused (400 ``malformed_body``), since lenient
    parsers read JSON behind a ``)]}'`` prefix, comments or other whitespace. Bodies with a byte-order mark or in
    UTF-16/32 are read as ``json.loads`` reads them (a declared binary type with such a head is not read);
    ``aws-chunked`` framing is decoded first; other content codings (gzip) are not read. A body to parse that
    is larger than ``limit`` bytes, or could hold ``_MAX_JSON_VALUES`` values or more, is refused (413): its tree
    would cost far more than its size.
    """
    body = request.body
    if not body:
        return None
    if "aws-chunked" in request.headers.get("content-encoding", "").lower():
        from authmw.signing.awschunked import decode_aws_chunked

        body = decode_aws_chunked(body)[0]  # what an upstream that decodes the framing reads
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    opaque = media.startswith(_OPAQUE)
    head = body[:4]
    if b"\x00" in head or head[:1] in (b"\xef", b"\xfe", b"\xff"):  # a BOM or UTF-16/32: not plain UTF-8
        if opaque:
            return None  # binary, as declared (JPEG starts with 0xff, gzip has a NUL)
        try:  # as json.loads(bytes) decodes it; then read like a UTF-8 body
            body = body.decode(json.detect_encoding(body), "surrogatepass").encode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise MalformedBody("the body is not valid text") from None
    leading = _LEADING_SPACE(body)
    start = leading.end() if leading else 0
    is_json = body[start : start + 1] in (b"{", b"[")
    if opaque and not is_json:
        return None
    if not _could_name_workspace(body) and (match is None or not match.route.body_actions):  # any spelling
        fields = [] if match is None else [_json_path(path)[-1].encode() for path in match.route.workspace_fields]
        if not any(f in body for f in fields):
            return None
    if not is_json:
        if media == _FORM:
            _bound(body, limit)
            if body.count(b"&") >= _MAX_JSON_VALUES:
                raise JsonBodyTooLarge(f"a form body the guard must read has {_MAX_JSON_VALUES} fields or more")
            return Form(tuple(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)))
        raise MalformedBody("a body that could name a workspace or a body action must be a JSON object or array")
    _bound(body, limit)
    try:
        return json.loads(body, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError):
        raise MalformedBody("the JSON body cannot be read unambiguously") from None


def _could_name_workspace(body: bytes) -> bool:
    # Literal searches (memchr first where it can): a case-insensitive regex scans a megabyte in tens of ms.
    if b"workspace" in body.lower() or (b"\\" in body and b"\\u" in body):
        return True
    return not body.isascii() and any(letter[:1] in body and letter in body for letter in _SPECIAL_LETTERS)


@dataclass(frozen=True, slots=True)
class Form:
    """An ``application/x-www-form-urlencoded`` body's fields (Spring's ``@ModelAttribute`` and ``getParameter``
    and Flask's ``request.values`` read them): read as query keys are."""

    pairs: tuple[tuple[str, str], ...]


def _bound(body: str | bytes, limit: int) -> None:
    if len(body) > limit:
        raise JsonBodyTooLarge(f"a body the guard must parse is larger than max_json_body ({limit} bytes)")
    if isinstance(body, str):
        values = body.count("{") + body.count("[") + body.count(",")
    else:
        values = body.count(b"{") + body.count(b"[") + body.count(b",")
    if values >= _MAX_JSON_VALUES:
        raise JsonBodyTooLarge(f"a body the guard must parse could hold more than {_MAX_JSON_VALUES} values")


def picks_action(body: Any, match: Match | None) -> bool:
    """Whether the body picks one of the route's body actions (a top-level field)."""
    return bool(body_actions(body, match))


def body_actions(body: Any, match: Match | None) -> list[str]:
    """The actions the body's top-level fields pick, keys read as workspace keys are (``Status``, ``STATUS``,
    ``ſtatus`` are ``status`` to a case-insensitive binder)."""
    if match is None or not match.route.body_actions:
        return []
    if isinstance(body, dict):
        keys = {_key_letters(key) for key in body}
    elif isinstance(body, Form):
        keys = {_key_letters(key) for key, _value in body.pairs}
    else:
        return []
    return [action for name, action in match.route.body_actions if _key_letters(name) in keys]


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _json_path(text: str) -> tuple[str, ...]:
    # Imported on use: the SSH gate imports this module for can_access_workspace alone, on every login attempt.
    from authmw.routes import json_path

    return json_path(text)
