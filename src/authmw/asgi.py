"""ASGI middleware: pure ASGI (``http`` and ``websocket``), no framework needed.

The request body is read once (up to the guard's ``max_body``; a larger declared or streamed body gets 413
before the app is called), checked, and replayed to the app unchanged. A websocket handshake is checked like
any request; a refusal is sent as an HTTP response where the server supports it (the ``websocket.http.response``
extension), else the handshake is closed with code 1008.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

from authmw.audit import log_decision
from authmw.errors import AuthmwError, BodyTooLarge, MalformedRequest, render
from authmw.guard import AuthContext, Guard, bare_context
from authmw.models import Request

__all__ = [
    "AuthMiddleware",
    "AuthmwCredentials",
    "AuthmwUser",
    "admit",
    "raw_target",
    "read_body",
    "request_from_scope",
    "send_error",
    "send_response",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


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


def raw_target(scope: Scope) -> tuple[str, str]:
    """The raw path as received and the request-target (path and query) of an ASGI request."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else quote(scope.get("root_path", "") + scope["path"], safe="/:@!$&'()*+,;=~")
    query = scope.get("query_string", b"")
    return path, f"{path}?{query.decode('latin-1')}" if query else path


def request_from_scope(scope: Scope, body: bytes) -> Request:
    """The core's view of an ASGI request: the raw path as received, headers in wire order."""
    client = scope.get("client")
    method = scope.get("method", "GET")
    if not method.isupper():  # methods are case-sensitive: "get" is not GET, whatever the app would make of it
        raise MalformedRequest("the method must be an upper-case token")
    return Request.build(method, raw_target(scope)[1], scope.get("headers", ()), body, client[0] if client else None)


Observer = Callable[[AuthContext, AuthmwError | None], None]


async def admit(
    guard: Guard, scope: Scope, receive: Receive, send: Send, observe: Observer | None = None
) -> tuple[AuthContext, bytes] | None:
    """Read the body, check the request and audit the decision (and tell ``observe``); a refusal is answered
    here. Returns the context and body of an admitted request, None otherwise (refused, or the client left)."""
    body = b""
    error: AuthmwError | None = None
    try:
        if scope["type"] == "http":
            read = await read_body(scope, receive, guard.max_body)
            if read is None:  # the client left before its body was complete: nobody to answer
                return None
            body = read
        context = guard.check(request_from_scope(scope, body))
    except AuthmwError as exc:
        peer = scope.get("client")
        context, error = exc.context or bare_context(peer[0] if peer else None), exc
    log_decision(context, error, scope.get("method", "GET"), scope.get("path", ""))
    if observe is not None:
        observe(context, error)
    if error is not None:
        await send_error(scope, send, error, context.request_id)
        return None
    return context, body


class AuthMiddleware:
    """Checks every ``http`` and ``websocket`` request with ``guard`` before ``app`` sees it.

    On success the app finds the :class:`~authmw.guard.AuthContext` in ``scope["authmw"]`` (the guard in
    ``scope["authmw.guard"]``, for further checks) and Starlette's
    ``scope["user"]`` / ``scope["auth"]``; a refusal is answered with the SPEC §9 JSON error and the app is
    not called. Every decision goes to the ``authmw.audit`` logger.
    """

    def __init__(self, app: ASGIApp, *, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        admitted = await admit(self.guard, scope, receive, send)
        if admitted is None:
            return
        context, body = admitted
        scope = dict(scope)
        if any(name[:9].lower() == b"x-authmw-" for name, _value in scope.get("headers", ())):
            # Identity comes from scope["authmw"] only: headers that pose as authmw's never reach the app.
            scope["headers"] = [(n, v) for n, v in scope["headers"] if n[:9].lower() != b"x-authmw-"]
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


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The whole request body (413 beyond ``limit``, declared or streamed); None if the client left first."""
    declared = _content_length(scope)
    if declared is not None and declared > limit:
        raise BodyTooLarge(f"declared body of {declared} bytes exceeds {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            if not value.isdigit():
                raise MalformedRequest("Content-Length is not a number")
            return int(value)
    return None


async def send_response(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """A complete HTTP response (``content-length`` added)."""
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(scope: Scope, send: Send, error: AuthmwError, request_id: str) -> None:
    """Answer with the SPEC §9 error (a websocket handshake: as HTTP where the server can, else close 1008)."""
    status, headers, body = render(error, request_id)
    raw_headers = [(k.encode(), v.encode()) for k, v in headers]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body})  # render() set content-length
    elif "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": error.code})
