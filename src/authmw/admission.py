"""Admitting a request off an ASGI connection, shared by the middleware, the sidecar and the token endpoints.

:func:`admit` prechecks the head, reads the body within its limits (413 beyond the guard's ``max_body``, 408 beyond
``body_timeout``, 503 beyond the :class:`BodyBudget` of bodies held at once), checks the request (in a worker thread
above :data:`OFFLOAD_BODY`, at most :data:`OFFLOAD_THREADS` at once: hashing and parsing a large body would hold the
event loop), audits the decision and answers a refusal with the documented error. Internal: apps use
:class:`authmw.asgi.AuthMiddleware`.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from authmw.audit import log_decision
from authmw.errors import AuthmwError, BodyTooLarge, MalformedRequest, RequestTimeout, ServerBusy, render
from authmw.guard import Guard, bare_context
from authmw.models import AuthContext, Request, _with_body

__all__ = [
    "CREDENTIAL_HEADERS",
    "DEFAULT_BODY_BUDGET",
    "DEFAULT_BODY_TIMEOUT",
    "OFFLOAD_BODY",
    "OFFLOAD_THREADS",
    "PROTECTED_HEADERS",
    "ASGIApp",
    "BodyBudget",
    "Message",
    "Observer",
    "Receive",
    "Scope",
    "Send",
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
DEFAULT_BODY_TIMEOUT = 60.0
DEFAULT_BODY_BUDGET = 256 * 1024 * 1024
#: A body above this many bytes is checked in a worker thread, not on the event loop (smaller ones inline: the
#: thread hop would cost more than their check).
OFFLOAD_BODY = 64 * 1024
#: The worker threads checking large bodies, shared by every middleware and proxy of the process: at most this many
#: run at once (the GIL makes more no faster), the rest wait their turn holding their body, which is within the
#: body budget already.
OFFLOAD_THREADS = 2
_CHECKS = ThreadPoolExecutor(OFFLOAD_THREADS, thread_name_prefix="authmw-check")
#: The caller's credentials (the proxy forwards them only with ``forward_credentials``).
CREDENTIAL_HEADERS = frozenset({b"authorization", b"x-auth-token", b"x-security-token", b"x-amz-security-token"})
#: Names an app or upstream reads as the caller's credentials or placement, as facts about the connection, or as
#: framing. A header name with ``_`` that folds onto one of these or onto ``X-Authmw-*`` (``_`` -> ``-``, as WSGI
#: servers and ASGI-to-WSGI bridges fold them) reaches neither the app behind the middleware nor the upstream.
PROTECTED_HEADERS = CREDENTIAL_HEADERS | frozenset(
    {
        *(b"x-workspace-id", b"x-project-id"),
        *(b"forwarded", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto"),
        *(b"x-real-ip", b"true-client-ip", b"x-client-ip"),
        *(b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"),
        *(b"proxy-authenticate", b"proxy-authorization", b"proxy-connection", b"content-length", b"host"),
    }
)


class BodyBudget:
    """The request-body bytes held in memory at once, across requests; a body that would exceed ``limit`` is
    refused (503 ``server_busy``) instead of growing the process. Thread-safe (one is shared by WSGI threads)."""

    __slots__ = ("_lock", "limit", "used")

    def __init__(self, limit: int = DEFAULT_BODY_BUDGET) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, size: int) -> None:
        """Hold ``size`` more bytes, or raise :class:`ServerBusy`."""
        with self._lock:
            if self.used + size > self.limit:
                raise ServerBusy(f"request bodies in memory would exceed {self.limit} bytes")
            self.used += size

    def give(self, size: int) -> None:
        """Release ``size`` bytes taken before."""
        if size:  # most requests have no body: no lock to take
            with self._lock:
                self.used -= size


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
    request = Request.build(method, raw_target(scope)[1], scope.get("headers", ()), body, client[0] if client else None)
    # RFC 9112 §3.2: an HTTP/1.1 request without Host, or with two (joined by a comma no host name has), is a 400.
    # h11 refuses both itself; httptools hands them to the app, two signed over both or not.
    host = request.headers.get("host")
    if host is None:
        if scope.get("http_version") == "1.1":  # not HTTP/2's: its authority is no header
            raise MalformedRequest("an HTTP/1.1 request without Host")
    elif "," in host:
        raise MalformedRequest("more than one Host")
    return request


Observer = Callable[[AuthContext, AuthmwError | None], None]


async def admit(
    guard: Guard,
    scope: Scope,
    receive: Receive,
    send: Send,
    observe: Observer | None = None,
    *,
    body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
    budget: BodyBudget | None = None,
    audit_admitted: bool = True,
) -> tuple[AuthContext, bytes] | None:
    """Precheck the head, read the body (within ``body_timeout`` and ``budget``), check the request and audit
    the decision (and tell ``observe``); a refusal is answered here. Returns the context and body of an admitted
    request, None otherwise (refused, or the client left). The caller gives an admitted body's length back to
    ``budget`` once it is done with it. ``audit_admitted=False``: the caller audits an admitted request itself,
    once it knows how it was answered (the proxy: the upstream's status, or 502)."""
    body = b""
    admitted = False
    try:
        error: AuthmwError | None = None
        try:
            head: Request | None = None
            if scope["type"] == "http":
                announced, declared = _framing(scope)  # one pass over the headers for both
                if announced:  # only then is there anything to save: a bodiless request goes straight on
                    head = request_from_scope(scope, b"")
                    guard.precheck(head)
                # Without a body the server has the whole request already: no deadline to keep (and no timer).
                timeout = body_timeout if announced else None
                read = await _read_body(receive, guard.max_body, declared, timeout=timeout, budget=budget)
                if read is None:  # the client left before its body was complete: nobody to answer
                    return None
                body = read
            # The head's headers were decoded for the precheck already: the same request, with its body.
            request = request_from_scope(scope, body) if head is None else _with_body(head, body)
            if len(body) <= OFFLOAD_BODY:
                context = guard.check(request)
            else:  # hashing and parsing a large body would hold the loop: health checks, other requests, SIGTERM
                in_context = contextvars.copy_context().run  # as asyncio.to_thread: the caller's context vars
                context = await asyncio.get_running_loop().run_in_executor(_CHECKS, in_context, guard.check, request)
        except AuthmwError as exc:
            peer = scope.get("client")
            context, error = exc.context or bare_context(peer[0] if peer else None), exc
        if error is not None or audit_admitted:
            log_decision(context, error, scope.get("method", "GET"), scope.get("path", ""))
        if observe is not None:
            observe(context, error)
        if error is not None:
            await send_error(scope, send, error, context.request_id)
            return None
        admitted = True
        return context, body
    finally:  # whatever went wrong (not only a refusal: a bug, a store driver's own error), the body goes back
        if not admitted and budget is not None:
            budget.give(len(body))


async def read_body(
    scope: Scope,
    receive: Receive,
    limit: int,
    *,
    timeout: float | None = DEFAULT_BODY_TIMEOUT,
    budget: BodyBudget | None = None,
) -> bytes | None:
    """The whole request body (413 beyond ``limit``, declared or streamed; 408 if it is not complete within
    ``timeout`` seconds; 503 if ``budget`` cannot hold it); None if the client left first. The body's length
    stays taken from ``budget``; anything else taken is given back."""
    return await _read_body(receive, limit, _framing(scope)[1], timeout=timeout, budget=budget)


async def _read_body(
    receive: Receive,
    limit: int,
    content_length: bytes | None,
    *,
    timeout: float | None,
    budget: BodyBudget | None,
) -> bytes | None:
    """:func:`read_body`, given the first Content-Length header's value (None: none) from :func:`_framing`."""
    declared = None if content_length is None else _declared(content_length)
    if declared is not None and declared > limit:
        raise BodyTooLarge(f"declared body of {declared} bytes exceeds {limit}")
    taken = [0]  # what is taken from the budget so far
    try:
        if timeout is None:  # no timer to arm (a bodiless request: the server has it all already)
            body = await _collect(receive, limit, budget, taken)
        else:
            async with asyncio.timeout(timeout):
                body = await _collect(receive, limit, budget, taken)
    except TimeoutError:
        if budget is not None:
            budget.give(taken[0])
        raise RequestTimeout(f"the body did not arrive within {timeout} s") from None
    except BaseException:
        if budget is not None:
            budget.give(taken[0])
        raise
    if body is None and budget is not None:
        budget.give(taken[0])
    return body


async def _collect(receive: Receive, limit: int, budget: BodyBudget | None, taken: list[int]) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        if size + len(chunk) > limit:
            raise BodyTooLarge(f"body exceeds {limit} bytes")
        if budget is not None and chunk:  # taken as it arrives: a slow client holds only what it sent
            budget.take(len(chunk))
            taken[0] += len(chunk)
        size += len(chunk)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _framing(scope: Scope) -> tuple[bool, bytes | None]:
    """Whether the request announces a body (HTTP/2 and later may stream one without saying so), and the value of
    its first Content-Length header (None: none)."""
    announced = scope.get("http_version", "1.1") not in ("1.0", "1.1")
    content_length = None
    for name, value in scope.get("headers", ()):
        lowered = name.lower()
        if lowered == b"content-length":
            if content_length is None:
                content_length = value
            if value.strip() not in (b"0", b""):
                announced = True
        elif lowered == b"transfer-encoding":
            announced = True
    return announced, content_length


def _declared(content_length: bytes) -> int:
    if not content_length.isdigit():
        raise MalformedRequest("Content-Length is not a number")
    return int(content_length)


async def send_response(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """A complete HTTP response (``content-length`` added)."""
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(scope: Scope, send: Send, error: AuthmwError, request_id: str) -> None:
    """Answer with the documented error (a websocket handshake: as HTTP where the server can, else close 1008)."""
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
