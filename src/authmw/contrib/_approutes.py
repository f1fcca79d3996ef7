"""A route table read from the app itself: what the framework walkers (``starlette.routes_from_app``,
``flask.routes_from_app``) share. Each route the app serves names its access where its handler is written — a
``require`` dependency or decorator, ``@public``, ``@authenticated`` — and becomes a :class:`~authmw.routes.Route`
like any configured one; a route that names nothing is a :class:`~authmw.errors.ConfigurationError` at start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from authmw.assembly import open_guard
from authmw.errors import ConfigurationError
from authmw.guard import Guard
from authmw.routes import _ACTION, _PARAM, _UUID, Access, Route

__all__ = [
    "Mark",
    "authenticated",
    "check_first_match",
    "guard_for",
    "mark",
    "mark_of_access",
    "marks_of",
    "public",
    "route_for",
]

T = TypeVar("T")
_MARKS = "__authmw_marks__"  # on a handler, an endpoint class or a mounted app: the Marks it carries
_TYPE_FITS: dict[str, Callable[[str], bool]] = {
    "int": lambda text: text.isascii() and text.isdigit(),
    "uuid": lambda text: _UUID.fullmatch(text) is not None,
}


@dataclass(frozen=True, slots=True)
class Mark:
    """What a handler says about its route: the access it needs, and for a protected route its action and
    optional resource URN template."""

    access: Access
    action: str | None = None
    resource: str | None = None

    def describe(self) -> str:
        return self.action if self.action is not None else self.access.value


def mark(target: T, found: Mark) -> T:
    """``target`` carrying ``found`` beside the marks it has (a wrapper made by ``functools.wraps`` has its
    wrapped function's already)."""
    marks = marks_of(target)
    if found not in marks:  # a bound method reads its function's attributes, and takes none itself
        setattr(getattr(target, "__func__", target), _MARKS, (*marks, found))
    return target


def marks_of(target: Any) -> tuple[Mark, ...]:
    found = getattr(target, _MARKS, ())
    return found if isinstance(found, tuple) else ()


def public(target: T) -> T:
    """Mark a handler (or an endpoint class, a mounted app) as public: anyone may call its route, unsigned."""
    return mark(target, Mark(Access.PUBLIC))


def authenticated(target: T) -> T:
    """Mark a handler (or an endpoint class, a mounted app) as open to any authenticated caller (no action)."""
    return mark(target, Mark(Access.AUTHENTICATE_ONLY))


def mark_of_access(value: str, *, setting: str) -> Mark:
    """The mark a setting such as ``docs_access`` gives: ``public``, ``authenticate-only`` or an IAM action."""
    if value in (Access.PUBLIC.value, Access.AUTHENTICATE_ONLY.value):
        return Mark(Access(value))
    if not isinstance(value, str) or not _ACTION.fullmatch(value):
        raise ConfigurationError(f"{setting} is public, authenticate-only or an IAM action (service:type:operation)")
    return Mark(Access.PROTECTED, value)


def route_for(method: str, template: str, marks: Iterable[Mark], *, served: str) -> Route:
    """The route of ``method template`` from the marks its handler carries; ``served`` names it as the app
    does (``GET /items/<int:id>``) in errors."""
    distinct = list(dict.fromkeys(marks))
    if not distinct:
        raise ConfigurationError(
            f"{served}: the app serves this route but names no IAM action: add require('service:type:operation'), "
            "or mark it @public or @authenticated"
        )
    if len(distinct) > 1:
        raise ConfigurationError(
            f"{served}: names {', '.join(m.describe() for m in distinct)}; a route has one (decide others in the "
            "handler with guard.authorize)"
        )
    found = distinct[0]
    return Route(method, template, found.action, found.access, found.resource)


def check_first_match(routes: Sequence[tuple[Route, str]]) -> None:
    """Refuse an app whose routes, matched in order as Starlette does, pick another route than the table would.

    The table prefers a literal segment to a parameter wherever they are declared; Starlette takes the first
    route that matches. So ``GET /users/{id}`` declared before ``GET /users/me`` serves ``/users/me`` with the
    first handler while the table would decide the second's action: that app is refused. ``routes`` are in the
    app's order, each with the name the app gives it.
    """
    shapes = [_parts(route.template) for route, _name in routes]
    for later_index, (later, later_name) in enumerate(routes):
        for earlier_index, (earlier, earlier_name) in enumerate(routes[:later_index]):
            if earlier.method != later.method and "*" not in (earlier.method, later.method):
                continue
            shape, later_shape = shapes[earlier_index], shapes[later_index]
            any_method = earlier.method == "*" and later.method != "*"
            if _overlap(shape, later_shape) and _prefers(later_shape, shape, any_method):
                raise ConfigurationError(
                    f"{later_name} is declared after {earlier_name}, which the app tries first for the same paths:"
                    " declare the more specific route first"
                )


def _parts(template: str) -> list[tuple[str, str]]:
    """(kind, text) per segment: kind is ``lit``, a parameter type (``str``, ``int``, ``uuid``) or ``rest``."""
    parts = []
    for segment in template[1:].split("/") if template != "/" else []:
        param = _PARAM.fullmatch(segment)
        if param is None:
            parts.append(("lit", segment))
        else:
            parts.append(("rest" if param.group(3) else param.group(2) or "str", param.group(1)))
    return parts


def _overlap(first: list[tuple[str, str]], second: list[tuple[str, str]]) -> bool:
    """Whether some path matches both templates."""
    if not first or not second:
        return not first and not second
    (kind, text), (other, other_text) = first[0], second[0]
    if "rest" in (kind, other):  # it takes one segment or more: whatever the other has left
        return True
    if kind == "lit" and other == "lit":
        if text != other_text:
            return False
    elif "lit" in (kind, other):
        literal, typed = (text, other) if kind == "lit" else (other_text, kind)
        if typed in _TYPE_FITS and not _TYPE_FITS[typed](literal):
            return False
    elif "str" not in (kind, other) and kind != other:
        return False  # an integer is never a UUID
    return _overlap(first[1:], second[1:])


def _prefers(later: list[tuple[str, str]], earlier: list[tuple[str, str]], any_method: bool) -> bool:
    """Whether the table would choose the ``later`` shape over the ``earlier`` where both match: at the first
    segment where their kinds differ, a literal beats a parameter and a parameter beats the rest of the path;
    where none differs, a route for the method beats one for any method (``any_method``: the earlier's)."""
    rank = {"lit": 0, "str": 1, "int": 1, "uuid": 1, "rest": 2}
    for a, b in zip(earlier, later, strict=False):
        if rank[a[0]] != rank[b[0]]:
            return rank[b[0]] < rank[a[0]]
    return any_method and len(earlier) == len(later)


def guard_for(derived: Sequence[Route], *, store: str | None, config: str | None, settings: Mapping[str, Any]) -> Guard:
    """The guard over ``store`` with the app's routes beside the configured ones (a route in both is refused:
    one place says what a route needs); ``config`` is a YAML file of settings, else ``settings`` are them."""
    if config is not None and settings:
        raise ConfigurationError(f"settings go in {config} or as arguments, not both: {', '.join(settings)}")
    extra = settings.get("routes") or ()
    return open_guard(store, config=config, **{**settings, "routes": [*extra, *derived]})
