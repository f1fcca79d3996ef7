"""The decision service's HTTP/1.1 server: httptools on the running (uvloop) loop, calling an ASGI app.

Only Envoy talks to it (over a few keep-alive connections, one small check after another), so it does what that
needs and no more, each check at the least cost: a scope of the keys the app reads, a request task, and the answer
written in one piece. Measured against uvicorn (also httptools and uvloop) serving the same :class:`AuthzApp`:
16% less CPU per decision, mostly uvicorn's per-header validation of the long identity headers, its per-message
bookkeeping and its flow-control layers. What it keeps: keep-alive (closed after ``keep_alive`` idle seconds),
pipelined requests answered in order, request bodies streamed to the app (reading paused while 64 KiB wait),
``Expect: 100-continue``, HEAD, no reading while a client leaves its answers unread, at most ``max_connections``
connections (further requests get 503 and a close), 400 and a close for what httptools cannot parse, 500 when the
app fails before answering, and a drain: on stop the listener closes, checks in flight are answered (then their
connections close), idle connections close, and the app's lifespan shutdown runs. An answer is written whole
(every answer of the service is small); a header value with CR or LF is refused (500), never written. No
websocket: Envoy checks a handshake as the plain request it is.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools

from authmw.admission import ASGIApp, Message, Scope

__all__ = ["serve_http"]

logger = logging.getLogger("authmw.authz")

#: Reading stops while this many body bytes wait for the app, and resumes as it takes them.
_HIGH_WATER = 64 * 1024
#: Reading stops while this many pipelined requests wait their turn (Envoy sends one at a time on a connection).
_PIPELINED = 8
_ASGI = {"version": "3.0", "spec_version": "2.3"}
_STATUS: dict[int, bytes] = {}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _plain(status: str, text: str) -> bytes:
    """A complete text/plain answer that closes the connection."""
    body = text.encode()
    head = f"HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    return head.encode() + body


_BAD_REQUEST = _plain("400 Bad Request", "Invalid HTTP request")
_BUSY = _plain("503 Service Unavailable", "Service Unavailable")
_FAILED = _plain("500 Internal Server Error", "Internal Server Error")


def _status_line(status: int) -> bytes:
    line = _STATUS.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = _STATUS[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode()
    return line


class _Server:
    """What the connections share: the app, the limits, the live connections and the requests in flight."""

    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop, max_connections: int, keep_alive: float):
        self.app, self.loop = app, loop
        self.max_connections, self.keep_alive = max_connections, keep_alive
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = False


class _Exchange:
    """One request of a connection: its scope, its body as it arrives, and how far its answer got."""

    __slots__ = (
        *("answered", "body", "complete", "connection", "continue_", "delivered", "keep_alive", "parts", "scope"),
        *("start", "waiter", "waiting"),
    )

    def __init__(self, connection: _Connection, scope: Scope, keep_alive: bool, continue_: bool) -> None:
        self.connection, self.scope, self.keep_alive, self.continue_ = connection, scope, keep_alive, continue_
        self.body: collections.deque[bytes] = collections.deque()  # received, not yet taken by the app
        self.waiting = 0  # their bytes
        self.complete = False  # the parser has the whole request
        self.delivered = False  # the app has the whole body
        self.waiter: asyncio.Future[None] | None = None
        self.start: tuple[int, list[tuple[bytes, bytes]]] | None = None  # the response start, until the body
        self.parts: list[bytes] = []  # the response body's parts sent with more_body
        self.answered = False

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def _wait(self) -> None:
        self.waiter = self.connection.server.loop.create_future()
        await self.waiter

    async def receive(self) -> Message:
        connection = self.connection
        while not self.delivered and not self.body and not self.complete and not connection.lost:
            if self.continue_:  # the client waits for this before it sends the body
                self.continue_ = False
                connection.write(_CONTINUE)
            await self._wait()
        if not self.delivered and (self.body or self.complete):
            chunk = self.body.popleft() if len(self.body) == 1 else b"".join(self.body)
            self.body.clear()
            self.waiting = 0
            connection.resume()
            self.delivered = self.complete
            return {"type": "http.request", "body": chunk, "more_body": not self.complete}
        while not connection.lost:  # after the whole body: the next message is the client leaving
            await self._wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.answered:
            raise RuntimeError(f"{kind!r} after the response was complete")
        if kind == "http.response.start" and self.start is None:
            self.start = (message["status"], list(message.get("headers", ())))
            return
        if kind != "http.response.body" or self.start is None:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if message.get("more_body", False):  # held until the last part: the answer is written whole
            self.parts.append(message.get("body", b""))
            return
        body = b"".join([*self.parts, message.get("body", b"")])
        status, headers = self.start
        lines: list[bytes] = []
        length = False
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"content-length":
                length = True
            elif lowered == b"connection" and b"close" in value.lower():
                self.keep_alive = False
            lines += (name, b": ", value, b"\r\n")
        block = b"".join(lines)
        # One CR and one LF per header line, or a name or value carried its own: it would split the answer. Two
        # scans of the block cost less than four tests per header (an allowed check has 13, 4 KiB in all).
        if block.count(b"\n") != len(headers) or block.count(b"\r") != len(headers):
            raise RuntimeError("a header the app sent would split the response")
        out = [_status_line(status), block]
        if not length:
            out += (b"content-length: ", str(len(body)).encode(), b"\r\n")
        if not self.keep_alive:
            out.append(b"connection: close\r\n")
        out.append(b"\r\n")
        if self.scope["method"] != "HEAD":
            out.append(body)
        self.answered = True
        self.connection.write(b"".join(out))


class _Connection(asyncio.Protocol):
    """One client connection: parses requests with httptools, runs them one after the other."""

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None
        self.lost = False
        self.paused = False  # reading stopped: a body waits for the app
        self.unread = False  # reading stopped: the answers wait for the client
        self.reading = True
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.current: _Exchange | None = None  # the request being parsed
        self.queue: collections.deque[_Exchange] = collections.deque()  # parsed (at least their heads), to run
        self.running = False
        self.idle: asyncio.TimerHandle | None = None  # armed once, moved on only when it fires (not per request)
        self.deadline = 0.0  # when the connection, idle since, is closed

    # -- the transport's side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer, local = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
        self.client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self.local = (str(local[0]), int(local[1])) if isinstance(local, tuple) else None
        self.server.connections.add(self)
        self._idle()

    def connection_lost(self, _exc: Exception | None) -> None:
        self.lost = True
        self.server.connections.discard(self)
        if self.idle is not None:
            self.idle.cancel()
        for exchange in (self.current, *self.queue):
            if exchange is not None:
                exchange.wake()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # answered as the plain request it is, then closed
            exchange = self.current or (self.queue[-1] if self.queue else None)
            if exchange is not None:
                exchange.keep_alive = False
            if self.current is not None:
                self.on_message_complete()
        except httptools.HttpParserError:
            self.write(_BAD_REQUEST)
            self.close()

    def write(self, data: bytes) -> None:
        if not self.lost and self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def resume(self) -> None:
        """The app took the body that waited."""
        self.paused = False
        self._flow()

    def pause_writing(self) -> None:
        """A client that sends requests without reading the answers: read no more until it does (the answers
        would pile up in memory)."""
        self.unread = True
        self._flow()

    def resume_writing(self) -> None:
        self.unread = False
        self._flow()

    def _flow(self) -> None:
        """Read while nothing waits: no body for the app beyond 64 KiB, no answers for the client beyond the
        transport's high-water mark, no more than a few pipelined requests parsed ahead of their turn."""
        wanted = not (self.paused or self.unread or len(self.queue) > _PIPELINED)
        if wanted != self.reading and self.transport is not None and not self.lost:
            self.reading = wanted
            if wanted:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def _idle(self) -> None:
        """No request in flight: close after ``keep_alive`` seconds unless one comes (at once when stopping)."""
        if self.server.stopping:
            self.close()
            return
        loop = self.server.loop
        self.deadline = loop.time() + self.server.keep_alive
        if self.idle is None:
            self.idle = loop.call_at(self.deadline, self._expire)

    def _expire(self) -> None:
        """The keep-alive timer: close if idle since the deadline, else look again then. A request whose head is
        complete is never cut here (the app has its body deadline); one whose head has not come whole by the
        deadline is closed with the idle connection it still is."""
        self.idle = None
        if self.lost:
            return
        loop = self.server.loop
        if self.running or self.current is not None:
            self.idle = loop.call_at(loop.time() + self.server.keep_alive, self._expire)
        elif loop.time() < self.deadline:
            self.idle = loop.call_at(self.deadline, self._expire)
        else:
            self.close()

    # -- httptools' callbacks

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        url = httptools.parse_url(self.url)
        raw_path = url.path or b"/"
        try:
            path = unquote(raw_path.decode("ascii"))
        except UnicodeDecodeError:  # httptools lets bytes above 0x7f through: not a path anyone sends
            raise httptools.HttpParserError("non-ASCII request target") from None
        scope: Scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": parser.get_http_version(),
            "server": self.local,
            "client": self.client,
            "scheme": "http",
            "method": parser.get_method().decode("ascii"),
            "root_path": "",
            "path": path,
            "raw_path": raw_path,
            "query_string": url.query or b"",
            "headers": self.headers,
        }
        expects = any(name == b"expect" and value.lower() == b"100-continue" for name, value in self.headers)
        self.current = _Exchange(self, scope, parser.should_keep_alive(), expects)
        self.queue.append(self.current)
        if not self.running:
            self._next()
        elif len(self.queue) > _PIPELINED:
            self._flow()

    def on_body(self, body: bytes) -> None:
        exchange = self.current
        if exchange is None:
            return
        exchange.body.append(body)
        exchange.waiting += len(body)
        if exchange.waiting > _HIGH_WATER and not self.paused:
            self.paused = True
            self._flow()
        exchange.wake()

    def on_message_complete(self) -> None:
        exchange = self.current
        if exchange is not None:
            exchange.complete = True
            exchange.wake()
            self.current = None

    # -- running the requests

    def _next(self) -> None:
        if not self.queue:
            self.running = False
            self._idle()
            return
        self.running = True
        exchange = self.queue[0]
        server = self.server
        if len(server.connections) > server.max_connections or server.stopping:
            self.write(_BUSY)
            self.close()
            return
        task = server.loop.create_task(self._run(exchange))
        server.tasks.add(task)
        task.add_done_callback(server.tasks.discard)

    async def _run(self, exchange: _Exchange) -> None:
        try:
            await self.server.app(exchange.scope, exchange.receive, exchange.send)
        except Exception:
            logger.exception("the app failed on %s %s", exchange.scope["method"], exchange.scope["path"])
            exchange.keep_alive = False
        if not exchange.answered:  # failed or returned before answering: a 500, and nothing to go on with
            self.write(_FAILED)
            self.close()
            return
        self.queue.popleft()
        if not self.reading:
            self._flow()
        # Closed after the answer: on the client's (or the app's) word, or when the app left some of the body
        # unread (say, a 413): the rest would have to be read to find the next request.
        if not exchange.keep_alive or self.lost or not exchange.complete:
            self.close()
            return
        self._next()


async def serve_http(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    stop: asyncio.Event,
    max_connections: int = 1000,
    backlog: int = 2048,
    keep_alive: float = 300.0,
    drain: float = 30.0,
) -> None:
    """Serve ``app`` on ``host:port`` until ``stop`` is set, then drain (see the module docstring): checks in
    flight get up to ``drain`` seconds."""
    loop = asyncio.get_running_loop()
    state = _Server(app, loop, max_connections, keep_alive)
    lifespan = _Lifespan(app)
    await lifespan.startup()
    listener = await loop.create_server(lambda: _Connection(state), host, port, backlog=backlog)
    try:
        await stop.wait()
    finally:
        listener.close()
        state.stopping = True
        for connection in list(state.connections):
            if not connection.running:
                connection.close()
        if state.tasks:
            await asyncio.wait(list(state.tasks), timeout=drain)
        for connection in list(state.connections):
            connection.close()
        await lifespan.shutdown()


class _Lifespan:
    """The app's lifespan protocol: startup before the first connection, shutdown after the last check."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.outbox: asyncio.Queue[Message] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _send(self, message: Message) -> None:
        await self.outbox.put(message)

    async def _run(self, scope: Scope) -> None:
        await self.app(scope, self.inbox.get, self._send)

    async def startup(self) -> None:
        scope: dict[str, Any] = {"type": "lifespan", "asgi": _ASGI, "state": {}}
        self.task = asyncio.get_running_loop().create_task(self._run(scope))
        await self.inbox.put({"type": "lifespan.startup"})
        answer = await self.outbox.get()
        if answer["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"the app's lifespan startup failed: {answer.get('message', answer['type'])}")

    async def shutdown(self) -> None:
        if self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.outbox.get(), 10)
