"""Flask helpers for apps wrapped by :class:`authmw.wsgi.AuthMiddleware` (``app.wsgi_app = AuthMiddleware(...)``).

``@require(action)`` answers a refusal itself with the documented error; :func:`install_error_handler` does the
same for an :class:`~authmw.errors.AuthmwError` a view raises (from its own ``guard.authorize`` call).

``protect(app, store=...)``, called once the views are registered, builds the guard's route table from the app
itself (:func:`routes_from_app`: the action each view's ``@require`` names, its ``@public`` /
``@authenticated`` mark, the static files public) and wraps ``app.wsgi_app``; a view that names nothing stops
the app at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request

from authmw.contrib._approutes import Mark, authenticated, guard_for, mark, mark_of_access, marks_of, public, route_for
from authmw.contrib._common import CONTEXT_KEY, View, authorize, context_of, decided, guard_of, wrap_view
from authmw.errors import AuthmwError, render
from authmw.guard import Guard
from authmw.models import AuthContext
from authmw.routes import Access, Route, path_template
from authmw.wsgi import AuthMiddleware

__all__ = [
    "authenticated",
    "context",
    "install_error_handler",
    "protect",
    "public",
    "require",
    "routes_from_app",
]

# Werkzeug's rule syntax: <name>, <converter:name>, <converter(arguments):name>
_RULE_PARAM = re.compile(r"<(?:([A-Za-z_][A-Za-z0-9_]*)(?:\((.*?)\))?:)?([A-Za-z_][A-Za-z0-9_]*)>")


def context() -> AuthContext:
    """The :class:`AuthContext` of the current request."""
    return context_of(request.environ)


def _check(guard: Guard | None, action: str, resource: str | None) -> Response | None:
    """None if allowed, else the documented response."""
    environ = request.environ
    try:
        checked = context_of(environ)
        if guard is None and decided(checked, action, resource):
            return None  # the middleware decided this very action for this request (its route's)
        authorize(guard_of(environ, guard), checked, action, resource, method=request.method, path=request.path)
    except AuthmwError as exc:
        return _refusal(exc)
    return None


def _refusal(error: AuthmwError) -> Response:
    found = request.environ.get(CONTEXT_KEY)
    status, headers, body = render(error, found.request_id if isinstance(found, AuthContext) else "")
    return Response(body, status, headers)


def require(action: str, resource: str | None = None, *, guard: Guard | None = None) -> Callable[[View], View]:
    """Decorate a view (sync or async) so it runs only if the principal may perform ``action`` (on
    ``resource``); the guard is ``guard``, else the middleware's."""

    def decorate(view: View) -> View:
        checked = wrap_view(view, lambda *_args: _check(guard, action, resource))
        return mark(checked, Mark(Access.PROTECTED, action, resource))

    return decorate


def install_error_handler(app: Flask) -> None:
    """Answer every :class:`AuthmwError` a view raises with the documented status, headers and JSON body."""
    app.register_error_handler(AuthmwError, _refusal)


def routes_from_app(app: Flask, *, static_access: str = "public") -> tuple[Route, ...]:
    """The route table of a Flask app, read from its URL map and views.

    A rule's access is what its view names: ``@require(action)`` (under the route decorator), ``@public`` or
    ``@authenticated``, on the view function or a class-based view's class. The static files (the app's and
    its blueprints') get ``static_access``: ``public`` (default), ``authenticate-only`` or an IAM action.
    Converters keep their type (``<int:id>``, ``<uuid:id>``; ``<path:rest>`` is the rest of the path); the
    methods Flask adds itself (``HEAD`` beside ``GET``, the automatic ``OPTIONS``) are not listed (the table
    reads HEAD as GET). A view that names nothing, or two things, is a :class:`~authmw.errors.ConfigurationError`
    naming its rule.
    """
    static = mark_of_access(static_access, setting="static_access")
    found = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        marks = [*marks_of(view), *marks_of(getattr(view, "view_class", None))]
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            marks.append(static)
        methods = rule.methods or {"*"}
        automatic = getattr(rule, "provide_automatic_options", False)
        listed = sorted(
            m for m in methods if not (m == "HEAD" and "GET" in methods) and not (m == "OPTIONS" and automatic)
        )
        template, _renamed = path_template(_braced(rule.rule), origin=f"{'/'.join(listed)} {rule.rule}")
        found += [route_for(m, template, marks, served=f"{m} {rule.rule}") for m in listed]
    return tuple(found)


def _braced(rule: str) -> str:
    """A Werkzeug rule in the ``{name:type}`` form: ``int`` (unsigned), ``uuid`` and ``path`` keep their type,
    other converters match one text segment (the app's converter checks the rest)."""

    def braced(param: re.Match[str]) -> str:
        converter, arguments, name = param.group(1) or "default", param.group(2) or "", param.group(3)
        if converter == "int" and "signed" in arguments:
            converter = "str"  # negative numbers: not the table's int
        return f"{{{name}:{converter}}}"

    return _RULE_PARAM.sub(braced, rule)


def protect(
    app: Flask, *, store: str | None = None, config: str | None = None, static_access: str = "public", **settings: Any
) -> Guard:
    """Put ``app`` behind authmw (``app.wsgi_app`` wrapped, so ``flask run`` and any WSGI server serve it), its
    route table read from the app (:func:`routes_from_app`); call it once the views are registered (a view
    registered later is not in the table: refused on every request, 403 ``route_not_allowed``). Returns the
    guard.

    The guard opens ``store`` (as ``authmw --store``; default ``$AUTHMW_STORE``) with ``settings`` as in the
    configuration file (``routes`` there are added to the app's, and a route in both is refused), or reads them
    from the YAML file ``config``. Refusals a view raises are answered as documented errors
    (:func:`install_error_handler`).
    """
    derived = routes_from_app(app, static_access=static_access)
    guard = guard_for(derived, store=store, config=config, settings=settings)
    app.wsgi_app = AuthMiddleware(app.wsgi_app, guard=guard)  # type: ignore[method-assign]
    install_error_handler(app)
    return guard
