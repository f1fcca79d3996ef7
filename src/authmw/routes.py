"""The route catalog: method + path → IAM action, and the one canonical reading of a request path.

A path is read once (:func:`parse_path`): split on ``/``, each segment percent-decoded and checked as UTF-8. In
strict mode (the default) anything that two HTTP stacks could read differently is refused before a route is
chosen: dot segments (also encoded), ``%2F`` inside a segment, ``;`` path parameters, NUL and control
characters. A route may allow ``encoded-slash``, ``encoded-dot`` or ``semicolon`` explicitly (``path_allow``),
for APIs such as object stores whose keys contain them. So the path the signature covered, the path the
route matched and the path the app routes on are the same path.

Templates name one segment with ``{name}`` and the rest of the path (one or more segments) with ``{name+}``.
Literal segments win over parameters, so ``/images/group`` beats ``/images/{id}``. A parameter may be typed,
``{id:int}`` or ``{id:uuid}``: its value is then read the way an app that parses it reads it, and the resource
URN carries the canonical spelling (``042`` and ``42`` name one report), or the request is refused.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib.resources import files
from typing import Any, TypeVar
from urllib.parse import unquote_to_bytes

from authmw.errors import AmbiguousPath, ConfigurationError, InvalidEncoding, InvalidPathParameter

__all__ = ["Access", "Route", "RouteCatalog", "Routes", "Unmatched", "modelarts_routes", "routes_from_openapi"]

_F = TypeVar("_F", bound=Callable[..., Any])
PATH_ALLOWANCES = frozenset({"encoded-slash", "encoded-dot", "semicolon", "empty-segment"})
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z]+))?(\+?)\}")  # {name}, {name:type}, {name+}
_RESOURCE_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PARAM_TYPES = ("str", "int", "uuid")
_INT_MAX = 2**63 - 1  # what a signed 64-bit id holds: larger "ids" wrap or fail differently in each app
_DIGITS = re.compile(r"[0-9]+")
_UUID = re.compile(r"[0-9A-Fa-f]{8}(-?)[0-9A-Fa-f]{4}\1[0-9A-Fa-f]{4}\1[0-9A-Fa-f]{4}\1[0-9A-Fa-f]{12}")
# What a parameter may not carry into a URN as itself: ':' would shift the segments, '*' and '?' read as
# wildcards wherever the URN is treated as a pattern, '%' is the escape itself ('/' too, except in {name+}).
_URN_ESCAPES = {"%": "%25", ":": "%3A", "*": "%2A", "?": "%3F"}
_JSON_PATH_SEGMENT = re.compile(r'"([^"]+)"|([^."]+)')
_ACTION = re.compile(r"[A-Za-z0-9_-]+:[A-Za-z0-9_*-]+:[A-Za-z0-9_*-]+")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # C0, DEL, C1, line/paragraph separators
_OPENAPI_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_OPENAPI_PARAM = re.compile(r"\{([^{}/]+)\}")


class Access(enum.Enum):
    """What a route demands: an allowed IAM action (default), any authenticated caller, or nothing."""

    PROTECTED = "protected"
    AUTHENTICATE_ONLY = "authenticate-only"
    PUBLIC = "public"


class Unmatched(enum.Enum):
    """What happens to a request no route matches (docs/access-model.md)."""

    DENY = "deny"
    AUTHENTICATE_ONLY = "authenticate-only"
    PUBLIC = "public"


@dataclass(frozen=True, slots=True)
class Route:
    """One catalog entry.

    ``resource`` is an optional URN template (``obs:*:*:bucket:{bucket}``) filled from the path parameters.
    ``body_actions`` maps a top-level JSON body field to the action that applies when the field is present
    (ModelArts starts and stops a service with the update route and a ``status`` field).
    ``also_required`` lists the actions ModelArts itself needs for the call (informational, not enforced).
    ``workspace_fields`` are the JSON paths (``metadata.workspace_id``; see :func:`json_path`) where the body
    names the workspace; every one present must agree with the workspace checked (as must any ``workspace_id``
    found anywhere in a JSON body, whatever the route declares).
    """

    method: str
    template: str
    action: str | None = None
    access: Access = Access.PROTECTED
    resource: str | None = None
    body_actions: tuple[tuple[str, str], ...] = ()
    path_allow: frozenset[str] = frozenset()
    also_required: tuple[str, ...] = ()
    workspace_fields: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """``METHOD /template``: how whitelists and logs name the route."""
        return f"{self.method} {self.template}"


@dataclass(frozen=True, slots=True)
class Match:
    """A route and the decoded path parameters it captured."""

    route: Route
    params: Mapping[str, str]
    rest: str | None = None  # the {name+} parameter, whose '/' separates path segments in the URN too

    def resource(self) -> str | None:
        """The route's resource URN with the (escaped, typed: canonical) parameters filled in, or None."""
        template = self.route.resource
        if template is None:
            return None
        return _RESOURCE_PARAM.sub(lambda m: _urn_escape(self.params[m.group(1)], m.group(1) == self.rest), template)


def _urn_escape(value: str, rest: bool) -> str:
    if not any(c in value for c in "%:*?/"):
        return value
    escaped = "".join(_URN_ESCAPES.get(c, c) for c in value)
    return escaped if rest else escaped.replace("/", "%2F")


@dataclass(frozen=True, slots=True)
class _Target:
    route: Route
    names: tuple[str, ...]  # its parameter names in path order
    types: tuple[str, ...]  # and their types (str, int, uuid)
    rest: str | None  # the {name+} parameter, if any


@dataclass(slots=True)
class _Node:
    literal: dict[str, _Node] = field(default_factory=dict)
    param: _Node | None = None
    rest: dict[str, _Target] = field(default_factory=dict)  # method → route whose last part is {name+}
    routes: dict[str, _Target] = field(default_factory=dict)  # method → route ending here


class RouteCatalog:
    """An immutable set of routes, matched segment by segment (a trie: cost grows with depth, not size)."""

    def __init__(self, routes: Iterable[Route] = (), *, unmatched: Unmatched | str = Unmatched.DENY) -> None:
        self.routes = tuple(routes)
        try:
            self.unmatched = Unmatched(unmatched)
        except ValueError:
            raise ConfigurationError("unmatched must be deny, authenticate-only or public") from None
        self._root = _Node()
        for route in self.routes:
            self._add(route)
        self.actions = tuple(sorted({a for r in self.routes for a in _actions_of(r)}))

    def _add(self, route: Route) -> None:
        if route.method not in _METHODS:
            raise ConfigurationError(f"route {route.name}: unknown method")
        if not route.template.startswith("/"):
            raise ConfigurationError(f"route {route.name}: the template must start with /")
        if route.access is Access.PROTECTED and route.action is None:
            raise ConfigurationError(f"route {route.name}: a protected route needs an action")
        for action in _actions_of(route):
            if not _ACTION.fullmatch(action):
                raise ConfigurationError(f"route {route.name}: {action!r} is not service:type:operation")
        if route.path_allow - PATH_ALLOWANCES:
            raise ConfigurationError(f"route {route.name}: path_allow takes {', '.join(sorted(PATH_ALLOWANCES))}")
        for text in route.workspace_fields:
            try:
                json_path(text)
            except ValueError as exc:
                raise ConfigurationError(f"route {route.name}: workspace_fields: {exc}") from None
        node = self._root
        names: list[str] = []
        types: list[str] = []
        rest = None
        parts = route.template[1:].split("/") if route.template != "/" else []
        table = None
        for index, part in enumerate(parts):
            param = _PARAM.fullmatch(part)
            if param is None:
                if "{" in part or "}" in part or not part:
                    raise ConfigurationError(f"route {route.name}: bad template segment {part!r}")
                node = node.literal.setdefault(part, _Node())
                continue
            name, kind, plus = param.group(1), param.group(2) or "str", param.group(3)
            if name in names:
                raise ConfigurationError(f"route {route.name}: parameter {name!r} appears twice")
            if kind not in _PARAM_TYPES or (plus and kind != "str"):
                raise ConfigurationError(
                    f"route {route.name}: {part}: a parameter type is one of {', '.join(_PARAM_TYPES)} "
                    "(and {name+} is text)"
                )
            names.append(name)
            types.append(kind)
            if plus:  # {name+}: the rest of the path
                if index != len(parts) - 1:
                    raise ConfigurationError(f"route {route.name}: {{{name}+}} must come last")
                table = node.rest
                rest = name
                break
            if node.param is None:
                node.param = _Node()
            node = node.param
        if route.resource is not None:
            if "{" in _RESOURCE_PARAM.sub("", route.resource) or "}" in _RESOURCE_PARAM.sub("", route.resource):
                raise ConfigurationError(f"route {route.name}: the resource names parameters as {{name}}")
            unknown = sorted({m.group(1) for m in _RESOURCE_PARAM.finditer(route.resource)} - set(names))
            if unknown:  # it would be filled with nothing, or with text no path parameter checked
                raise ConfigurationError(
                    f"route {route.name}: the resource names {', '.join(unknown)}, not in the path"
                )
        table = node.routes if table is None else table
        if route.method in table:
            raise ConfigurationError(f"route {route.name} is defined twice")
        table[route.method] = _Target(route, tuple(names), tuple(types), rest)

    def match(self, method: str, segments: tuple[str, ...]) -> Match | None:
        """The route for ``method`` and the decoded path ``segments`` (see :func:`parse_path`), or None."""
        values: list[str] = []
        found = _walk(self._root, method, segments, 0, values)
        if found is None:
            if method != "HEAD":
                return None
            return self.match("GET", segments)  # HEAD is GET without the body, unless a route says otherwise
        params = {
            name: value if kind == "str" else _typed(kind, value)
            for name, kind, value in zip(found.names, found.types, values, strict=True)
        }
        return Match(found.route, params, found.rest)


class Routes:
    """Routes declared next to the code they protect, with decorators; pass it as ``routes=`` to the guard.

    ::

        routes = Routes()

        @routes.protect("GET", "/reports/{id}", "reports:report:get")
        async def get_report(request): ...

        guard = open_guard(url, routes=routes)   # added to the configured routes and presets
    """

    def __init__(self) -> None:
        self._routes: list[Route] = []

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes)

    def protect(
        self,
        method: str,
        path: str,
        action: str,
        *,
        resource: str | None = None,
        body_actions: Mapping[str, str] | None = None,
        path_allow: Iterable[str] = (),
        workspace_fields: Iterable[str] = (),
    ) -> Callable[[_F], _F]:
        """Declare that ``method path`` needs ``action`` (allowed by the caller's policies)."""
        route = Route(
            method.upper(),
            path,
            action,
            Access.PROTECTED,
            resource,
            tuple((body_actions or {}).items()),
            frozenset(path_allow),
            workspace_fields=tuple(workspace_fields),
        )
        return self._declaring(route)

    def public(self, method: str, path: str) -> Callable[[_F], _F]:
        """Declare a route anyone may call, without credentials."""
        return self._declaring(Route(method.upper(), path, access=Access.PUBLIC))

    def authenticated(self, method: str, path: str) -> Callable[[_F], _F]:
        """Declare a route any authenticated caller may call (no action is checked)."""
        return self._declaring(Route(method.upper(), path, access=Access.AUTHENTICATE_ONLY))

    def _declaring(self, route: Route) -> Callable[[_F], _F]:
        self._routes.append(route)

        def decorate(handler: _F) -> _F:
            return handler

        return decorate


def _typed(kind: str, value: str) -> str:
    """The canonical spelling of a typed parameter (:class:`InvalidPathParameter` if it is not one)."""
    if kind == "int":
        # ASCII digits only: int() would also take "+1", " 1", "1_0" and other scripts' digits.
        if _DIGITS.fullmatch(value) is None or len(value) > 64 or int(value) > _INT_MAX:
            raise InvalidPathParameter("an integer path parameter is 0 to 2^63-1 in ASCII digits")
        return str(int(value))
    if _UUID.fullmatch(value) is None:  # uuid.UUID() would also take braces, "urn:uuid:", "0x" and "_"
        raise InvalidPathParameter("a UUID path parameter is 32 hex digits, hyphenated 8-4-4-4-12 or not at all")
    return str(uuid.UUID(value))


@lru_cache(maxsize=1024)
def json_path(text: str) -> tuple[str, ...]:
    """The keys of a JSON path: ``metadata.workspace_id`` → ``("metadata", "workspace_id")``; a key holding
    dots is quoted: ``metadata.labels."os.modelarts/workspace.id"``. Raises ValueError."""
    keys: list[str] = []
    position = 0
    while True:
        segment = _JSON_PATH_SEGMENT.match(text, position)
        if segment is None:
            raise ValueError(f"{text!r} is not a JSON path (keys joined by '.', a key with dots in quotes)")
        keys.append(segment.group(1) or segment.group(2))
        position = segment.end()
        if position == len(text):
            return tuple(keys)
        if text[position] != ".":
            raise ValueError(f"{text!r} is not a JSON path (keys joined by '.', a key with dots in quotes)")
        position += 1


def _walk(node: _Node, method: str, segments: tuple[str, ...], index: int, values: list[str]) -> _Target | None:
    if index == len(segments):
        return node.routes.get(method) or node.routes.get("*")
    segment = segments[index]
    child = node.literal.get(segment)
    if child is not None:
        found = _walk(child, method, segments, index + 1, values)
        if found is not None:
            return found
    if node.param is not None and segment:
        values.append(segment)
        found = _walk(node.param, method, segments, index + 1, values)
        if found is not None:
            return found
        values.pop()
    if node.rest:
        target = node.rest.get(method) or node.rest.get("*")
        if target is not None and all(segments[index:]):
            values.append("/".join(segments[index:]))
            return target
    return None


def _actions_of(route: Route) -> tuple[str, ...]:
    return tuple(a for a in (route.action, *(a for _f, a in route.body_actions)) if a)


@dataclass(frozen=True, slots=True)
class ParsedPath:
    """A path read once: decoded segments and the ambiguous spellings it used."""

    segments: tuple[str, ...]
    uses: frozenset[str]


def parse_path(raw: str) -> ParsedPath:
    """Split and decode a raw request path; raises :class:`InvalidEncoding` or :class:`AmbiguousPath`.

    Dot segments (``.``, ``..``, also percent-encoded), NUL and control characters are refused for every
    route; the allowances a route may grant are reported in ``uses`` and checked by the caller once the route
    is known.
    """
    if not raw.startswith("/"):
        raise InvalidEncoding("the path must be absolute")
    uses: set[str] = set()
    segments = []
    for part in raw[1:].split("/"):
        if ";" in part:
            uses.add("semicolon")
        if "\\" in part:  # some servers read a backslash as a slash
            uses.add("encoded-slash")
        if "%" in part:
            try:
                text = unquote_to_bytes(part).decode("utf-8")
            except UnicodeError:  # also raw bytes that were not UTF-8 (surrogate-escaped) beside an escape
                raise InvalidEncoding("the path is not UTF-8") from None
            if _bad_percent(part):
                raise InvalidEncoding("malformed percent-encoding in the path")
            lowered = part.lower()
            if "%2f" in lowered or "%5c" in lowered:
                uses.add("encoded-slash")
                # What an upstream that decodes %2F before normalising would see: no dot segments there either.
                if any(piece in (".", "..") for piece in re.split(r"[/\\]", text)):
                    raise AmbiguousPath("dot segments behind encoded slashes are not allowed in paths")
            if "%2e" in lowered:
                uses.add("encoded-dot")
        else:
            text = part
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:  # surrogate-escaped bytes that were not UTF-8
                    raise InvalidEncoding("the path is not UTF-8") from None
        if text in (".", "..") or _CONTROL.search(text):
            raise AmbiguousPath("dot segments and control characters are not allowed in paths")
        segments.append(text)
    if segments[-1] == "":  # a trailing slash names the same resource ("/" is the root: no segment)
        segments.pop()
    if "" in segments:  # "//": some upstreams merge slashes, some do not
        uses.add("empty-segment")
    return ParsedPath(tuple(segments), frozenset(uses))


def _bad_percent(part: str) -> bool:
    index = part.find("%")
    while index != -1:
        pair = part[index + 1 : index + 3]
        if len(pair) != 2 or not all(c in "0123456789abcdefABCDEF" for c in pair):
            return True
        index = part.find("%", index + 3)
    return False


def check_allowed(parsed: ParsedPath, route: Route | None, strict: bool) -> None:
    """Refuse ambiguous spellings the matched route (or, unmatched, no route) does not allow."""
    if strict and parsed.uses:
        refused = parsed.uses - (route.path_allow if route is not None else frozenset())
        if refused:
            raise AmbiguousPath(f"ambiguous path ({', '.join(sorted(refused))}) not allowed on this route")


def route_from_mapping(data: Mapping[str, Any], *, origin: str) -> Route:
    """A route from its configuration form: ``{method, path, action, access, resource, body_actions, ...}``."""
    known = {"method", "path", "action", "access", "resource", "body_actions", "path_allow", "workspace_fields"}
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{origin}: a route is a mapping")
    unknown = sorted(k if isinstance(k, str) else repr(k) for k in data if k not in known)
    if unknown:
        raise ConfigurationError(
            f"{origin}: unknown route key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    try:
        method = data.get("method", "*")
        if not isinstance(method, str):
            raise TypeError
        method = method.upper()
        path = data["path"]
        access = Access(data.get("access", "protected"))
        body = data.get("body_actions") or {}
        allow = data.get("path_allow") or []
        fields = data.get("workspace_fields") or []
        if not isinstance(path, str) or not isinstance(body, Mapping) or not isinstance(allow, list):
            raise TypeError
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise TypeError
        action = data.get("action")
        resource = data.get("resource")
        if not (action is None or isinstance(action, str)) or not (resource is None or isinstance(resource, str)):
            raise TypeError
    except KeyError:
        raise ConfigurationError(f"{origin}: a route needs a path") from None
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"{origin}: route fields: method and path are text, access is protected|authenticate-only|public, "
            "body_actions maps a field to an action, path_allow is a list, workspace_fields a list of JSON paths"
        ) from None
    return Route(
        method,
        path,
        action,
        access,
        resource,
        tuple((str(k), str(v)) for k, v in body.items()),
        frozenset(str(a) for a in allow),
        workspace_fields=tuple(fields),
    )


_APP_PARAM = re.compile(r"\{([^{}:/]+)(?::([^{}/]*))?\}")  # {name} or {name:convertor}, as Starlette writes them
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_]")
_KINDS = {"int": "int", "uuid": "uuid", "path": "+"}  # any other convertor (str, float, custom): one text segment


def path_template(path: str, kinds: Mapping[str, str] | None = None, *, origin: str) -> tuple[str, dict[str, str]]:
    """The route template for an app's path written with ``{name}`` parameters (as OpenAPI and Starlette write
    them), and the parameter names it renamed (``{item-id}`` → ``item_id``).

    A parameter's type is its convertor (``{id:int}``), else ``kinds[name]``: ``int`` and ``uuid`` are typed,
    ``path`` is the rest of the path (``{name+}``, last only), anything else one text segment. A segment mixing
    text and parameters (``{name}.{ext}``) is matched as one text parameter named after its first: the app
    checks the rest. A trailing slash is dropped, as the guard reads paths. ``origin`` names the route in errors.
    """
    if not path.startswith("/"):
        raise ConfigurationError(f"{origin}: the path must start with /")
    renamed: dict[str, str] = {}
    parts = []
    segments = path[1:].split("/") if path != "/" else []
    if segments and segments[-1] == "":
        segments.pop()
    for index, segment in enumerate(segments):
        params = list(_APP_PARAM.finditer(segment))
        if not params:
            if not segment or "{" in segment or "}" in segment:
                raise ConfigurationError(f"{origin}: bad path segment {segment!r}")
            parts.append(segment)
            continue
        name, convertor = params[0].group(1), params[0].group(2) or (kinds or {}).get(params[0].group(1), "str")
        safe = _NAME_CHARS.sub("_", name)
        safe = safe if safe[0].isalpha() or safe[0] == "_" else "_" + safe
        if safe != name:
            renamed[name] = safe
        kind = _KINDS.get(convertor, "str") if params[0].group(0) == segment else "str"
        if kind == "+":
            if index != len(segments) - 1:
                raise ConfigurationError(f"{origin}: a {{{name}:path}} parameter must come last")
            parts.append(f"{{{safe}+}}")
        else:
            parts.append(f"{{{safe}}}" if kind == "str" else f"{{{safe}:{kind}}}")
    return "/" + "/".join(parts), renamed


def routes_from_openapi(document: Mapping[str, Any], *, prefix: str = "") -> tuple[Route, ...]:
    """The routes of an OpenAPI 3 document whose operations name their IAM action.

    Each operation has ``x-iam-action: service:type:operation`` (and optionally ``x-iam-resource``, a URN
    template over the path parameters), or ``x-iam-access: public`` / ``authenticate-only``; an operation with
    neither is a :class:`~authmw.errors.ConfigurationError` naming it, so no route the app serves goes unchecked.
    A path parameter whose schema is an ``integer`` (or a string of format ``uuid``) is typed. ``prefix`` is
    the path the API is served under (the document's paths are relative to its server URL).
    """
    paths = document.get("paths") if isinstance(document, Mapping) else None
    if not isinstance(paths, Mapping):
        raise ConfigurationError("the OpenAPI document has no paths mapping")
    routes = []
    for path, item in paths.items():
        if not isinstance(path, str) or not isinstance(item, Mapping):
            raise ConfigurationError(f"OpenAPI path {path!r}: a path maps to its operations")
        for method in _OPENAPI_METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            origin = f"OpenAPI {method.upper()} {prefix}{path}"
            if not isinstance(operation, Mapping):
                raise ConfigurationError(f"{origin}: an operation is a mapping")
            kinds = _openapi_kinds([*(item.get("parameters") or ()), *(operation.get("parameters") or ())])
            template, renamed = path_template(prefix.rstrip("/") + path, kinds, origin=origin)
            routes.append(_openapi_route(method.upper(), template, renamed, operation, origin))
    return tuple(routes)


def _openapi_kinds(parameters: list[Any]) -> dict[str, str]:
    kinds = {}
    for parameter in parameters:
        if isinstance(parameter, Mapping) and parameter.get("in") == "path" and isinstance(parameter.get("name"), str):
            schema = parameter.get("schema")
            schema = schema if isinstance(schema, Mapping) else {}
            if schema.get("type") == "integer":
                kinds[parameter["name"]] = "int"
            elif schema.get("type") == "string" and schema.get("format") == "uuid":
                kinds[parameter["name"]] = "uuid"
    return kinds


def _openapi_route(
    method: str, template: str, renamed: Mapping[str, str], operation: Mapping[str, Any], origin: str
) -> Route:
    action, access, resource = (operation.get(key) for key in ("x-iam-action", "x-iam-access", "x-iam-resource"))
    if method == "TRACE":
        raise ConfigurationError(f"{origin}: TRACE is not a method authmw routes")
    if not all(value is None or isinstance(value, str) for value in (action, access, resource)):
        raise ConfigurationError(f"{origin}: x-iam-action, x-iam-access and x-iam-resource are text")
    if access not in (None, Access.PUBLIC.value, Access.AUTHENTICATE_ONLY.value):
        raise ConfigurationError(f"{origin}: x-iam-access is public or authenticate-only")
    if (action is None) == (access is None):
        raise ConfigurationError(
            f"{origin}: name the IAM action (x-iam-action) or x-iam-access: public | authenticate-only, not "
            + ("both" if action else "neither")
        )
    if resource is not None:
        if action is None:
            raise ConfigurationError(f"{origin}: x-iam-resource goes with x-iam-action")
        resource = _OPENAPI_PARAM.sub(lambda m: "{" + renamed.get(m.group(1), m.group(1)) + "}", resource)
    if action is None:
        return Route(method, template, access=Access(access))
    return Route(method, template, action, resource=resource)


@cache
def modelarts_routes() -> tuple[Route, ...]:
    """The built-in ``modelarts`` preset, read from the packaged table: the rows of ``research/modelarts_actions.tsv``
    (the documented permissions table), then the routes of every call of the official SDK
    (``huaweicloudsdkmodelarts`` 3.1.219, v1 client), both written by ``scripts/gen_modelarts_routes.py``.

    Two documentation defects are handled here (access_model.md §4): the row for listing an instance's mounted
    storage repeats ``POST .../create-image``, so it becomes ``GET .../{instance_id}/storage``; and a service is
    started or stopped through its update route, so ``PUT .../services/{service_id}`` is
    ``modelarts:service:update`` unless the JSON body has a ``status`` field (``modelarts:service:action``).
    Actions listed without a route stay in the action catalog only.

    The table's own columns. ``resource``: the URN template of a route whose path names a resource by id,
    ``modelarts:*:*:<type>:{id}``. The URN form is ``<service>:<region>:<account-id>:<type>:<path>`` (IAM
    identity policies, usermanual-iam5/iam_01_1275); the types notebook, trainJob, aiAlgorithm, model,
    service, dataset, workspace and image are ModelArts' own (usermanual-permissions/iam_11_0053,
    bestpractice-modelarts/modelarts_24_0080). ModelArts authorizes per resource only under identity
    policies (Version 5.0); legacy 1.1 policies take no ModelArts resource path, and that the path is the bare
    id is the documented pattern, not verified type by type. A route whose id names no documented type (or a
    type other than its action's, as create-image) carries none. ``workspace_fields``: where the body names
    the workspace. Training jobs and algorithms: ``metadata.workspace_id`` (JobMetadata, AlgorithmMetadata in
    huaweicloudsdkmodelarts 3.1.219; api-modelarts/CreateTrainingJob.html). Notebooks, images (register,
    create-image), services (create, update), training-job searches: a top-level ``workspace_id``
    (NotebookCreateRequest, ImageRegRequest, ImageCreateReq, ServiceCreateRequest/ServiceUpdateRequest,
    JobSearches). Models and datasets: a top-level ``workspace_id`` (api-modelarts/modelarts_03_0076.html,
    CreateDataset.html). Pools and networks label it ``metadata.labels."os.modelarts/workspace.id"``
    (PoolMetaLabels). The SDK's rows take theirs from its request models (the generator walks them). Whatever a
    route declares, the guard also checks every workspace id anywhere in a JSON body.
    ``inferred``: no ModelArts documentation names the route's action, the generator derived it by the documented
    naming rule ``modelarts:<resourceType>:<verb>`` (the actions only such rows carry are
    :func:`modelarts_inferred_actions`; ``authmw policy lint`` warns about policies that rely on one).
    """
    routes: dict[tuple[str, str], Route] = {}
    for row in _modelarts_rows():
        method, path, action, also, resource, fields = row[:6]
        if method == "-":
            continue
        if action == "modelarts:notebook:listMountedStorages":
            method, path = "GET", "/v1/{project_id}/notebooks/{instance_id}/storage"
            resource = "modelarts:*:*:notebook:{instance_id}"
        key = (method, path)
        if key in routes:
            first = routes[key]
            if first.action != "modelarts:service:update" or action != "modelarts:service:action":
                raise ConfigurationError(f"modelarts preset: {method} {path} listed twice")
            routes[key] = Route(
                method,
                path,
                first.action,
                resource=first.resource,
                body_actions=(("status", action),),
                workspace_fields=first.workspace_fields,
            )
            continue
        routes[key] = Route(
            method,
            path,
            action,
            resource=resource or None,
            also_required=tuple(also.split()),
            workspace_fields=tuple(fields.split()),
        )
    return tuple(routes.values())


def _modelarts_rows() -> list[tuple[str, ...]]:
    """The packaged table's rows, seven columns each (missing trailing ones empty)."""
    lines = files("authmw.data").joinpath("modelarts_routes.tsv").read_text().splitlines()
    header = next(index for index, line in enumerate(lines) if line.startswith("method\t"))
    return [tuple([*line.split("\t"), "", "", "", ""][:7]) for line in lines[header + 1 :] if line]


@cache
def modelarts_inferred_actions() -> frozenset[str]:
    """The preset's actions that no documented row names: derived by the naming rule, not Huawei's word."""
    rows = _modelarts_rows()
    documented = {row[2] for row in rows if row[6] != "inferred"}
    return frozenset(row[2] for row in rows if row[6] == "inferred") - documented
