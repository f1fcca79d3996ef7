"""Starlette and FastAPI helpers for apps behind :class:`authmw.asgi.AuthMiddleware`.

``require(action)`` is a FastAPI dependency (``Depends(require("svc:type:op"))``) and, in plain Starlette, a
coroutine function to await with the request; ``@action_required(action)`` decorates a plain Starlette endpoint.
A refusal raises the :class:`~authmw.errors.AuthmwError`, which the handler from :func:`install_error_handler`
answers with the documented error (without it Starlette answers 500).

``protect(app, store=...)``, called once the app's routes are declared, builds the guard's route table from the
app itself (:func:`routes_from_app`: the action each route's ``require`` dependency or decorator names, its
``@public`` / ``@authenticated`` mark, the framework's documentation routes public) and puts the app behind the
middleware; a route that names nothing stops the app at start-up.
"""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.routing import BaseRoute, Host, Mount, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authmw.admission import send_error
from authmw.asgi import AuthMiddleware
from authmw.contrib._approutes import (
    Mark,
    authenticated,
    check_first_match,
    guard_for,
    mark,
    mark_of_access,
    marks_of,
    public,
    route_for,
)
from authmw.contrib._common import CONTEXT_KEY, View, authorize, context_of, decided, guard_of
from authmw.errors import AuthmwError, ConfigurationError, render
from authmw.guard import Guard
from authmw.models import AuthContext
from authmw.routes import Access, Route, path_template

__all__ = [
    "action_required",
    "authenticated",
    "current_context",
    "install_error_handler",
    "protect",
    "public",
    "require",
    "routes_from_app",
]


def current_context(request: HTTPConnection) -> AuthContext:
    """The :class:`AuthContext` of a request (or websocket) that passed the middleware."""
    return context_of(request.scope)


def require(
    action: str, resource: str | None = None, *, guard: Guard | None = None
) -> Callable[[HTTPConnection], Awaitable[AuthContext]]:
    """A dependency that allows the request only if its principal may perform ``action`` (on ``resource``).

    It returns the request's context narrowed to ``action`` (with the deciding statement in ``decision``); the
    guard is ``guard``, else the middleware's. :func:`routes_from_app` reads the action (and ``resource``, a URN
    template over the path parameters) as the route's; the middleware's decision is then not made twice.
    """

    async def dependency(request: HTTPConnection) -> AuthContext:  # async: FastAPI needs no worker thread
        scope = request.scope
        context = context_of(scope)
        if guard is None and decided(context, action, resource):
            return context  # the middleware decided this very action for this request (its route's)
        checker = guard_of(scope, guard)
        method = scope.get("method", "GET")
        return authorize(checker, context, action, resource, method=method, path=request.url.path)

    dependency.__name__ = dependency.__qualname__ = f"require({action!r})"
    return mark(dependency, Mark(Access.PROTECTED, action, resource))


def action_required(action: str, resource: str | None = None, *, guard: Guard | None = None) -> Callable[[View], View]:
    """Decorate a plain Starlette endpoint (a function of the request, or an ``HTTPEndpoint`` method) so it runs
    only if the principal may perform ``action`` (on ``resource``); :func:`routes_from_app` reads the action."""
    check = require(action, resource, guard=guard)

    refused = ConfigurationError(f"action_required({action!r}): the endpoint takes no request (FastAPI: Depends)")

    def decorate(endpoint: View) -> View:
        if not inspect.signature(endpoint).parameters:
            raise refused

        @functools.wraps(endpoint)
        async def checked(*args: Any, **kwargs: Any) -> Any:
            request = next((a for a in (*args, *kwargs.values()) if isinstance(a, HTTPConnection)), None)
            if request is None:  # fail closed: the endpoint does not run unchecked
                raise refused
            await check(request)
            if inspect.iscoroutinefunction(endpoint):
                return await endpoint(*args, **kwargs)
            return await run_in_threadpool(endpoint, *args, **kwargs)  # where Starlette would have run it

        return mark(cast("View", checked), Mark(Access.PROTECTED, action, resource))

    return decorate


class _Refusal(Response):
    """The documented answer; a websocket handshake gets it as HTTP where the server can, else a 1008 close."""

    def __init__(self, error: AuthmwError, request_id: str) -> None:
        status, headers, body = render(error, request_id)
        super().__init__(body, status, headers=dict(headers))
        self.error, self.request_id = error, request_id

    async def __call__(self, scope: Scope, _receive: Receive, send: Send) -> None:
        await send_error(scope, send, self.error, self.request_id)


async def _answer(connection: HTTPConnection, error: Exception) -> Response:
    assert isinstance(error, AuthmwError)  # registered for AuthmwError only
    context = connection.scope.get(CONTEXT_KEY)
    return _Refusal(error, context.request_id if isinstance(context, AuthContext) else "")


def install_error_handler(app: Starlette) -> None:
    """Answer every :class:`AuthmwError` the app raises (a ``require`` refusal, a ``guard.authorize`` call)
    with the documented status, headers and JSON body."""
    app.add_exception_handler(AuthmwError, _answer)


def routes_from_app(app: Starlette | Iterable[BaseRoute], *, docs_access: str = "public") -> tuple[Route, ...]:
    """The route table of a Starlette or FastAPI app (or of a list of Starlette routes), read from its routes.

    A route's access is what its handler names: a ``require`` dependency (FastAPI, the route's own, its
    router's or the app's, or a dependency's dependency), ``@action_required``, ``@public`` or
    ``@authenticated`` on the endpoint (on an ``HTTPEndpoint`` class: on the class for every method, else on
    each method handler); a mounted app that is not a router carries ``public(...)`` or
    ``authenticated(...)`` itself and covers every path below its mount. The app's own documentation routes
    (FastAPI's ``openapi_url``, ``docs_url`` and its OAuth2 redirect, ``redoc_url``) get ``docs_access``:
    ``public`` (default), ``authenticate-only`` or an IAM action. Path parameters keep their type (a ``{id:int}``
    convertor, a FastAPI ``id: int`` or ``UUID`` parameter). A route that names nothing, or two things, is a
    :class:`~authmw.errors.ConfigurationError` naming it, as is a route the table would match in another
    order than Starlette (which takes the first match).
    """
    found: list[tuple[Route, str]] = []
    _walk(app, "", mark_of_access(docs_access, setting="docs_access"), found)
    check_first_match(found)
    return tuple(route for route, _name in found)


def _walk(app: Any, prefix: str, docs: Mark, found: list[tuple[Route, str]]) -> None:
    routes = app if isinstance(app, list | tuple) else getattr(app, "routes", ())
    own_docs = _docs_paths(app)
    for route in _effective(routes):
        original = getattr(route, "original_route", route)  # FastAPI >= 0.13x: an included router's route
        path = prefix + getattr(route, "path", "")
        if isinstance(original, Host):
            raise ConfigurationError(f"Host({original.host!r}): host routing is not derived: list its routes")
        if isinstance(original, Mount):
            _mount(original, path.rstrip("/"), docs, found)
            continue
        if not hasattr(original, "endpoint"):
            raise ConfigurationError(f"{path or '/'}: {type(original).__name__} is a route kind authmw cannot read")
        marks = [*marks_of(original.endpoint), *_dependency_marks(getattr(route, "dependant", None))]
        if type(original).__name__ == "Route" and getattr(original, "path", None) in own_docs:
            marks.append(docs)  # FastAPI's documentation routes are plain Starlette routes
        websocket = isinstance(original, WebSocketRoute) or _is_websocket(original)
        methods = ["GET"] if websocket else _methods(route)
        template, _renamed = path_template(path, _path_kinds(route), origin=f"{'/'.join(methods)} {path}")
        if methods == ["*"] and inspect.isclass(original.endpoint) and not marks:
            handlers = _handlers(original.endpoint)  # an HTTPEndpoint: each method handler names its own
            methods, marks_by = list(handlers), handlers
        else:
            marks_by = dict.fromkeys(methods, marks)
        for method in methods:
            served = f"{method} {path}"
            found.append((route_for(method, template, marks_by[method], served=served), served))


def _mount(mount: Mount, path: str, docs: Mark, found: list[tuple[Route, str]]) -> None:
    inner = getattr(mount, "_base_app", mount.app)  # past the middleware Starlette wraps a mount's app in
    marks = [*marks_of(mount), *marks_of(mount.app), *marks_of(inner)]
    if marks or not hasattr(inner, "routes"):  # an app that routes on its own: the mark covers all below
        served = f"* {path}/..."
        template, _renamed = path_template(f"{path}/{{path:path}}", origin=served)
        found.append((route_for("*", template, marks, served=served), served))
        return
    _walk(inner, path, docs, found)


def _effective(routes: Iterable[BaseRoute]) -> list[Any]:
    """``routes`` with FastAPI's included routers opened (newer FastAPI keeps them as one entry; older ones,
    and Starlette, list every route already)."""
    try:
        from fastapi.routing import iter_route_contexts  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return list(routes)
    return list(iter_route_contexts(list(routes)))


def _docs_paths(app: Any) -> set[str]:
    docs_url = getattr(app, "docs_url", None)
    named = [getattr(app, "openapi_url", None), docs_url, getattr(app, "redoc_url", None)]
    if docs_url:
        named.append(getattr(app, "swagger_ui_oauth2_redirect_url", None))
    return {path for path in named if isinstance(path, str)}


def _handlers(endpoint: type) -> dict[str, list[Mark]]:
    """The marks of each method an endpoint class answers (``HEAD`` is read as ``GET`` where it has one)."""
    names = [n for n in ("get", "head", "post", "put", "patch", "delete", "options") if hasattr(endpoint, n)]
    return {n.upper(): list(marks_of(getattr(endpoint, n))) for n in names if n != "head" or "get" not in names}


def _is_websocket(route: Any) -> bool:
    return type(route).__name__ == "APIWebSocketRoute"


def _methods(route: Any) -> list[str]:
    methods = getattr(route, "methods", None)
    if not methods:
        return ["*"]  # an endpoint class answers the methods it defines
    return sorted(m for m in methods if m != "HEAD" or "GET" not in methods)  # the table reads HEAD as GET


def _dependency_marks(dependant: Any) -> list[Mark]:
    marks: list[Mark] = []
    pending = [dependant] if dependant is not None else []
    while pending:
        for dependency in getattr(pending.pop(), "dependencies", ()):
            marks += marks_of(dependency.call)
            pending.append(dependency)
    return marks


def _path_kinds(route: Any) -> dict[str, str]:
    """FastAPI's typed path parameters (``item_id: int``), read as the table reads ``{item_id:int}``."""
    kinds = {}
    for field in getattr(getattr(route, "dependant", None), "path_params", ()):
        annotation = getattr(getattr(field, "field_info", None), "annotation", None)
        name = getattr(field, "alias", None) or field.name
        if annotation is int:
            kinds[name] = "int"
        elif annotation is uuid.UUID:
            kinds[name] = "uuid"
    return kinds


def protect(
    app: Starlette,
    *,
    store: str | None = None,
    config: str | None = None,
    docs_access: str = "public",
    **settings: Any,
) -> Guard:
    """Put ``app`` behind authmw, its route table read from the app (:func:`routes_from_app`); call it once the
    routes are declared. Returns the guard.

    The guard opens ``store`` (as ``authmw --store``; default ``$AUTHMW_STORE``) with ``settings`` as in the
    configuration file (``routes`` there are added to the app's, and a route in both is refused), or reads them
    from the YAML file ``config``. Refusals a handler raises are answered as documented errors
    (:func:`install_error_handler`). A route declared after this call stops the app at start-up (ASGI lifespan).
    """
    derived = routes_from_app(app, docs_access=docs_access)
    guard = guard_for(derived, store=store, config=config, settings=settings)
    app.add_middleware(AuthMiddleware, guard=guard)
    app.add_middleware(_RoutesUnchanged, starlette=app, derived=derived, docs_access=docs_access)
    install_error_handler(app)
    return guard


class _RoutesUnchanged:
    """Fails the lifespan start-up if the app's routes changed after :func:`protect` read them (a route declared
    later would be refused on every request: better said at start-up, with the fix)."""

    def __init__(self, app: ASGIApp, *, starlette: Starlette, derived: tuple[Route, ...], docs_access: str) -> None:
        self.app, self.starlette, self.derived, self.docs_access = app, starlette, derived, docs_access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            try:
                now = routes_from_app(self.starlette, docs_access=self.docs_access)
                added = [route.name for route in now if route not in self.derived]
                if added:
                    raise ConfigurationError(
                        f"declared after protect(app): {', '.join(added)}; call protect(app) after the routes"
                    )
            except ConfigurationError as exc:
                message: Message = await receive()  # lifespan.startup
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
        await self.app(scope, receive, send)
