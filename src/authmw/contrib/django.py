"""Django helpers for projects wrapped by :class:`authmw.wsgi.AuthMiddleware` (in ``wsgi.py``) or by
:class:`authmw.asgi.AuthMiddleware` (in ``asgi.py``): the context is read from the environ or the scope."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from django.http import HttpResponse  # type: ignore[import-untyped]

from authmw.contrib._common import CONTEXT_KEY, View, authorize, context_of, guard_of, wrap_view
from authmw.errors import AuthmwError, render
from authmw.guard import Guard
from authmw.models import AuthContext

__all__ = ["context", "require"]


def _carrier(request: Any) -> Mapping[str, Any]:
    scope = getattr(request, "scope", None)  # ASGIRequest; a WSGIRequest's META is the environ
    return cast("Mapping[str, Any]", request.META if scope is None else scope)


def context(request: Any) -> AuthContext:
    """The :class:`AuthContext` of ``request`` (an ``HttpRequest``)."""
    return context_of(_carrier(request))


def _check(request: Any, guard: Guard | None, action: str, resource: str | None) -> Any:
    """None if allowed, else the documented ``HttpResponse``."""
    carrier = _carrier(request)
    try:
        authorize(
            guard_of(carrier, guard), context_of(carrier), action, resource, method=request.method, path=request.path
        )
    except AuthmwError as exc:
        found = carrier.get(CONTEXT_KEY)
        status, headers, body = render(exc, found.request_id if isinstance(found, AuthContext) else "")
        return HttpResponse(body, status=status, headers=dict(headers))
    return None


def require(action: str, resource: str | None = None, *, guard: Guard | None = None) -> Callable[[View], View]:
    """Decorate a view (sync or async) so it runs only if the principal may perform ``action`` (on
    ``resource``); a refusal is answered with the documented error. The guard is ``guard``, else the middleware's."""

    def decorate(view: View) -> View:
        return wrap_view(view, lambda request, *_args: _check(request, guard, action, resource))

    return decorate
