"""Starlette and FastAPI helpers for apps behind :class:`authmw.asgi.AuthMiddleware`.

``require(action)`` is a FastAPI dependency (``Depends(require("svc:type:op"))``) and, in plain Starlette, a
coroutine function to await with the request; a refusal raises the :class:`~authmw.errors.AuthmwError`, which the
handler from :func:`install_error_handler` answers with the SPEC §9 error (without it Starlette answers 500).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from authmw.admission import send_error
from authmw.contrib._common import CONTEXT_KEY, authorize, context_of, guard_of
from authmw.errors import AuthmwError, render
from authmw.guard import Guard
from authmw.models import AuthContext

__all__ = ["current_context", "install_error_handler", "require"]


def current_context(request: HTTPConnection) -> AuthContext:
    """The :class:`AuthContext` of a request (or websocket) that passed the middleware."""
    return context_of(request.scope)


def require(
    action: str, resource: str | None = None, *, guard: Guard | None = None
) -> Callable[[HTTPConnection], Awaitable[AuthContext]]:
    """A dependency that allows the request only if its principal may perform ``action`` (on ``resource``).

    It returns the request's context narrowed to ``action`` (with the deciding statement in ``decision``); the
    guard is ``guard``, else the middleware's.
    """

    async def dependency(request: HTTPConnection) -> AuthContext:  # async: FastAPI needs no worker thread
        scope = request.scope
        checker = guard_of(scope, guard)
        method = scope.get("method", "GET")
        return authorize(checker, context_of(scope), action, resource, method=method, path=request.url.path)

    dependency.__name__ = dependency.__qualname__ = f"require({action!r})"
    return dependency


class _Refusal(Response):
    """The SPEC §9 answer; a websocket handshake gets it as HTTP where the server can, else a 1008 close."""

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
    with the SPEC §9 status, headers and JSON body."""
    app.add_exception_handler(AuthmwError, _answer)
