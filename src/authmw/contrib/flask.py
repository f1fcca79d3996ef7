"""Flask helpers for apps wrapped by :class:`authmw.wsgi.AuthMiddleware` (``app.wsgi_app = AuthMiddleware(...)``).

``@require(action)`` answers a refusal itself with the SPEC §9 error; :func:`install_error_handler` does the
same for an :class:`~authmw.errors.AuthmwError` a view raises (from its own ``guard.authorize`` call).
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, Response, request

from authmw.contrib._common import CONTEXT_KEY, View, authorize, context_of, guard_of, wrap_view
from authmw.errors import AuthmwError, render
from authmw.guard import Guard
from authmw.models import AuthContext

__all__ = ["context", "install_error_handler", "require"]


def context() -> AuthContext:
    """The :class:`AuthContext` of the current request."""
    return context_of(request.environ)


def _check(guard: Guard | None, action: str, resource: str | None) -> Response | None:
    """None if allowed, else the SPEC §9 response."""
    environ = request.environ
    try:
        authorize(
            guard_of(environ, guard), context_of(environ), action, resource, method=request.method, path=request.path
        )
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
        return wrap_view(view, lambda *_args: _check(guard, action, resource))

    return decorate


def install_error_handler(app: Flask) -> None:
    """Answer every :class:`AuthmwError` a view raises with the SPEC §9 status, headers and JSON body."""
    app.register_error_handler(AuthmwError, _refusal)
