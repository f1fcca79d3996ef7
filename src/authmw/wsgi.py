"""WSGI middleware: the same pipeline and answers as the ASGI one, for Flask, Django and any WSGI app.

WSGI servers fold ``X-Foo`` and ``X_Foo`` into the same ``HTTP_X_FOO`` key, so a header name with ``_`` cannot
be told apart from its ``-`` twin here; the signature schemes only sign ``-`` names, and identity headers are
never read from the request, so the fold cannot smuggle one in. The raw request-target is taken from
``REQUEST_URI`` / ``RAW_URI`` when the server provides it (gunicorn, uWSGI, werkzeug), so the signature is
checked against the path exactly as sent. A request announcing a body is prechecked from its head
(:meth:`Guard.precheck`) before the body is read, and the bodies held at once stay within ``body_budget`` (taken
as the bytes arrive, 64 KiB at a time); the deadline for a body to arrive is the server's socket timeout
(gunicorn ``--timeout``, waitress ``channel_timeout``; werkzeug and wsgiref have none: run them behind a server
or proxy that has one).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from authmw.admission import BodyBudget
from authmw.audit import log_decision
from authmw.errors import AuthmwError, BodyTooLarge, MalformedRequest, render
from authmw.guard import Guard, bare_context
from authmw.models import Request, _with_body

__all__ = ["AuthMiddleware"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
_CHUNK = 64 * 1024  # read, and taken from the budget, this much at a time
_SPECIAL = {"CONTENT_TYPE": "content-type", "CONTENT_LENGTH": "content-length"}


def request_from_environ(environ: Environ, body: bytes) -> Request:
    """The core's view of a WSGI request."""
    method = environ.get("REQUEST_METHOD", "GET")
    if not method.isupper():  # methods are case-sensitive: "get" is not GET, whatever the app would make of it
        raise MalformedRequest("the method must be an upper-case token")
    # RFC 9112 §3.2: an HTTP/1.1 request without Host, or with two (werkzeug joins them with a comma), is a 400.
    host = environ.get("HTTP_HOST")
    if host is None:
        if environ.get("SERVER_PROTOCOL") == "HTTP/1.1":
            raise MalformedRequest("an HTTP/1.1 request without Host")
    elif "," in host:
        raise MalformedRequest("more than one Host")
    target = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if not target or not target.startswith("/"):
        # PATH_INFO is already decoded (latin-1 text of the bytes): re-encode; a %2F sent by the client is lost.
        decoded = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1", "replace")
        path = quote(decoded, safe="/:@!$&'()*+,;=~")
        query = environ.get("QUERY_STRING", "")
        target = f"{path}?{query}" if query else path
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append((key[5:].replace("_", "-").lower(), value))
        elif key in _SPECIAL and value:
            headers.append((_SPECIAL[key], value))
    # PEP 3333 hands header values over as latin-1 text: non-ASCII ones go back to the bytes the client sent.
    raw = [(name, value if value.isascii() else value.encode("latin-1", "replace")) for name, value in headers]
    return Request.build(method, target, raw, body, environ.get("REMOTE_ADDR"))


class AuthMiddleware:
    """Checks every request with ``guard``; the app finds the context in ``environ["authmw"]`` (and the guard
    in ``environ["authmw.guard"]``). The bodies held at once stay within ``body_budget`` (503 beyond)."""

    def __init__(self, app: WSGIApp, *, guard: Guard, body_budget: BodyBudget | None = None) -> None:
        self.app = app
        self.guard = guard
        self.body_budget = BodyBudget() if body_budget is None else body_budget

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        taken = 0
        try:  # every path gives the body's bytes back: a refusal, any other exception, the app's return
            try:
                head = None
                if environ.get("CONTENT_LENGTH", "") not in ("", "0") or environ.get("wsgi.input_terminated"):
                    head = request_from_environ(environ, b"")
                    self.guard.precheck(head)  # refused before its body is read
                body = self._read_body(environ)
                taken = len(body)
                # The head's headers were decoded for the precheck already: the same request, with its body.
                request = request_from_environ(environ, body) if head is None else _with_body(head, body)
                context = self.guard.check(request)
            except AuthmwError as exc:
                context = exc.context or bare_context(environ.get("REMOTE_ADDR"))
                log_decision(context, exc, environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", ""))
                status, headers, payload = render(exc, context.request_id)
                start_response(f"{status} {_REASONS.get(status, 'Error')}", headers)
                return [payload]
            log_decision(context, None, request.method, request.path)
            for key in [k for k in environ if k.startswith("HTTP_X_AUTHMW_")]:
                del environ[key]  # identity comes from environ["authmw"] only, never from a header posing as authmw's
            environ["authmw"] = context
            environ["authmw.guard"] = self.guard
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            return self.app(environ, start_response)
        finally:  # the app has the body now (a streamed response holds only what it reads into memory itself)
            self.body_budget.give(taken)

    def _read_body(self, environ: Environ) -> bytes:
        limit = self.guard.max_body
        text = environ.get("CONTENT_LENGTH") or ""
        stream = environ.get("wsgi.input")
        if stream is None:
            return b""
        if text:
            try:
                declared = int(text)
            except ValueError:
                raise MalformedRequest("Content-Length is not a number") from None
            if declared < 0:
                raise MalformedRequest("Content-Length is negative")
            if declared > limit:
                raise BodyTooLarge(f"declared body of {declared} bytes exceeds {limit}")
            return self._held(stream, declared)
        if environ.get("wsgi.input_terminated"):  # chunked upload: the server marks the end of the stream
            return self._held(stream, None)
        return b""

    def _held(self, stream: Any, declared: int | None) -> bytes:
        """The body (``declared`` bytes, or up to the end of a terminated stream), read in chunks with the budget
        taken as each arrives, as the ASGI form does: a client that announces much and sends little holds only
        what it sent. On success the body's length stays taken; on any failure everything is given back."""
        if declared == 0:
            return b""
        limit = self.guard.max_body
        budget = self.body_budget
        chunks: list[bytes] = []
        size = 0
        try:
            while declared is None or size < declared:
                want = _CHUNK if declared is None else min(_CHUNK, declared - size)
                chunk = _read(stream, want)
                if not chunk:
                    break
                if size + len(chunk) > limit:
                    raise BodyTooLarge(f"body exceeds {limit} bytes")
                budget.take(len(chunk))
                size += len(chunk)
                chunks.append(chunk)
            if declared is not None and size != declared:
                raise MalformedRequest("the body is shorter than its Content-Length")
        except BaseException:
            budget.give(size)
            raise
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _read(stream: Any, size: int) -> bytes:
    try:
        return bytes(stream.read(size))
    except (OSError, ValueError):  # broken chunked framing, a connection reset mid-body
        raise MalformedRequest("the request body could not be read") from None


_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    408: "Request Timeout",
    413: "Content Too Large",
    503: "Service Unavailable",
}
