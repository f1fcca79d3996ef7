"""ASGI middleware: pure ASGI (``http`` and ``websocket``), no framework needed.

The request body is read once (up to the guard's ``max_body``; a larger declared or streamed body gets 413
before the app is called), checked, and replayed to the app unchanged. Before a body is read, what the head
alone decides is checked (:meth:`Guard.precheck`: route, scheme, time, access key or token), so an
unauthenticated client cannot make authmw hold its body; the body must then arrive within ``body_timeout``
(408), and all bodies held at once stay within a :class:`BodyBudget` (503). A large body is checked in a worker
thread (hashing and parsing it would hold the event loop). A websocket handshake is checked like any request; a
refusal is sent as an HTTP response where the server supports it (the ``websocket.http.response`` extension),
else the handshake is closed with code 1008.
"""

from __future__ import annotations

from collections.abc import Iterable

from authmw.admission import (
    DEFAULT_BODY_TIMEOUT,
    PROTECTED_HEADERS,
    ASGIApp,
    BodyBudget,
    Message,
    Receive,
    Scope,
    Send,
    admit,
)
from authmw.guard import Guard
from authmw.models import AuthContext

__all__ = ["AuthMiddleware", "AuthmwCredentials", "AuthmwUser", "BodyBudget"]


class AuthmwUser:
    """``request.user`` in Starlette's shape (``is_authenticated``, ``display_name``, ``identity``)."""

    __slots__ = ("context",)

    def __init__(self, context: AuthContext) -> None:
        self.context = context

    @property
    def is_authenticated(self) -> bool:
        return self.context.principal is not None and self.context.error is None

    @property
    def display_name(self) -> str:
        principal = self.context.principal
        return "" if principal is None else principal.user_name

    @property
    def identity(self) -> str:
        principal = self.context.principal
        return "" if principal is None else principal.user_id


class AuthmwCredentials:
    """``request.auth`` in Starlette's shape: ``scopes`` are the allowed actions (computed on first use)."""

    __slots__ = ("context",)

    def __init__(self, context: AuthContext) -> None:
        self.context = context

    @property
    def scopes(self) -> list[str]:
        return list(self.context.allowed_actions)


class AuthMiddleware:
    """Checks every ``http`` and ``websocket`` request with ``guard`` before ``app`` sees it.

    On success the app finds the :class:`~authmw.guard.AuthContext` in ``scope["authmw"]`` (the guard in
    ``scope["authmw.guard"]``, for further checks) and Starlette's
    ``scope["user"]`` / ``scope["auth"]``; a refusal is answered with the documented JSON error and the app is
    not called. Every decision goes to the ``authmw.audit`` logger. A body must arrive within ``body_timeout``
    seconds (408; None: no deadline), and the bodies held at once within ``body_budget`` (503; one budget may be
    shared by several middlewares).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        guard: Guard,
        body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
        body_budget: BodyBudget | None = None,
    ) -> None:
        self.app = app
        self.guard = guard
        self.body_timeout = body_timeout
        self.body_budget = BodyBudget() if body_budget is None else body_budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        budget = self.body_budget
        admitted = await admit(self.guard, scope, receive, send, body_timeout=self.body_timeout, budget=budget)
        if admitted is None:
            return
        context, body = admitted
        try:
            await self._call_app(scope, receive, send, context, body)
        finally:
            budget.give(len(body))

    async def _call_app(self, scope: Scope, receive: Receive, send: Send, context: AuthContext, body: bytes) -> None:
        kind = scope["type"]
        scope = dict(scope)
        if _may_hide(scope.get("headers", ())) and any(_hidden_from_app(name) for name, _value in scope["headers"]):
            # Identity comes from scope["authmw"] only: headers that pose as authmw's (or as what it checked, once
            # folded) never reach the app.
            scope["headers"] = [(n, v) for n, v in scope["headers"] if not _hidden_from_app(n)]
        scope["authmw"] = context
        scope["authmw.guard"] = self.guard
        scope["user"] = AuthmwUser(context)
        scope["auth"] = AuthmwCredentials(context)
        if kind != "http":
            await self.app(scope, receive, send)
            return
        replay: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay_receive() -> Message:
            return replay.pop(0) if replay else await receive()

        await self.app(scope, replay_receive, send)


_UNDERSCORE = ord("_")


def _may_hide(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether any header name may be hidden from the app (:func:`_hidden_from_app`): a few C calls over all the
    names at once, where the exact test is a Python call per header (a name merely containing ``x-authmw-`` is a
    false positive, then tested exactly)."""
    names = b"\n".join([name for name, _value in headers]).lower()
    return _UNDERSCORE in names or b"x-authmw-" in names


def _hidden_from_app(name: bytes) -> bool:
    """``X-Authmw-*``, and a ``_`` name folding onto one or onto a protected name (``X_Authmw_Agency``,
    ``X_Workspace_Id``): an app reading headers the WSGI way (a bridge, a framework that folds ``_`` into ``-``)
    would take it for authmw's, or for the workspace the guard did not check."""
    if _UNDERSCORE in name:  # an int operand: bytes' fast path (b"_" costs a buffer lookup per header)
        folded = name.lower().replace(b"_", b"-")
        return folded in PROTECTED_HEADERS or folded[:9] == b"x-authmw-"
    return name[:9].lower() == b"x-authmw-"  # the common case: per header of every request
