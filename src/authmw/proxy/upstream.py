"""The sidecar's upstream client: HTTP/1.1 keep-alive pools on an asyncio protocol and httptools' response parser.

httpx and httpcore were ~60% of the proxy's CPU; this client does only what the proxy needs: one request at a time
per connection (no pipelining), the request body already in memory (the guard read it: sent with
``Content-Length``), the response parsed by httptools (content-length, chunked or until-close bodies) and streamed
to the caller as it arrives, reading paused while more than :data:`HIGH_WATER` bytes wait for the caller.

What it guarantees:

- No cookie jar, no redirects, no default headers: the request goes out as the proxy built it, plus ``Host`` (the
  upstream's) and ``Content-Length``; a ``Set-Cookie`` answered is the caller's business, never stored.
- A connection goes back to its pool only after a complete response the upstream did not mark ``Connection:
  close``, with nothing after it; a response not read to its end, a parse error, a timeout or extra bytes discard
  the connection, so one request's response can never be read as another's.
- A request is never sent twice. A pooled connection the upstream has closed (its FIN seen by the event loop) is
  dropped before anything is written and another one is taken; once the request is written, a failure is the
  caller's 502, whatever the method: the upstream may have acted on it, and its ``X-Authmw-Assertion`` is single
  use. httpx did the same here (``retries=0``).
- Interim ``1xx`` answers (``100 Continue`` to a forwarded ``Expect``) are skipped; ``HEAD``, ``204`` and ``304``
  answers have no body.
- Every failure is an :class:`~authmw.errors.UpstreamUnavailable` whose detail names it as httpx did
  (``ConnectError``, ``ConnectTimeout``, ``PoolTimeout``, ``WriteTimeout``, ``ReadTimeout``, ``ReadError``,
  ``RemoteProtocolError``, ``LocalProtocolError``), so the 502s and their audit records read as before.
"""

from __future__ import annotations

import asyncio
import collections
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

from authmw.errors import UpstreamUnavailable

__all__ = ["HIGH_WATER", "MAX_HEAD", "UpstreamClient", "UpstreamLimits", "UpstreamResponse", "tls_context"]

#: Response bytes held for the caller before the client stops reading from the upstream (its flow control).
HIGH_WATER = 256 * 1024
#: A response head larger than this is refused (as h11's limit was): an upstream cannot make the proxy hold more.
MAX_HEAD = 100 * 1024
#: Request bodies up to this size are written with the head in one send (one copy, one system call).
_JOIN_BODY = 64 * 1024
#: Methods whose request carries ``Content-Length: 0`` without a body, as httpx sent it.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True, slots=True)
class UpstreamLimits:
    """The upstream client: ``pools`` keep-alive pools used in turn, ``connections`` each (the defaults: up to 512
    connections), and its timeouts in seconds (``connect``, ``read``/``write`` per chunk, ``pool`` for a free
    connection; 502 beyond each)."""

    pools: int = 32
    connections: int = 16
    connect: float = 5.0
    read: float = 60.0
    write: float = 60.0
    pool: float = 10.0


def tls_context() -> ssl.SSLContext:
    """How the proxy verifies an ``https://`` upstream, as httpx did: ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` when
    set, else certifi's bundle (the system's without certifi); HTTP/1.1 offered by ALPN. Loading a bundle costs
    ~50 ms of CPU: made once, off the event loop."""
    if os.environ.get("SSL_CERT_FILE"):
        context = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    elif os.environ.get("SSL_CERT_DIR"):
        context = ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    else:
        try:
            import certifi
        except ImportError:  # pragma: no cover - certifi comes with httpx, which the proxy extra installs
            context = ssl.create_default_context()
        else:
            context = ssl.create_default_context(cafile=certifi.where())
    context.set_alpn_protocols(["http/1.1"])
    return context


class _Stop(Exception):  # stops httptools mid-feed: an error of the upstream's, not the caller's
    pass


def _failure(name: str) -> UpstreamUnavailable:
    return UpstreamUnavailable(name)


class _Connection(asyncio.Protocol):
    """One connection to the upstream and the exchange on it (one at a time). httptools calls the ``on_*``
    methods from :meth:`data_received`; the caller waits in :meth:`wait` for the head, then for body bytes."""

    __slots__ = (
        "_drained",
        "_head_bytes",
        "_head_only",
        "_interim",
        "_loop",
        "_paused",
        "_waiter",
        "chunks",
        "closed",
        "complete",
        "error",
        "head_done",
        "headers",
        "keep_alive",
        "parser",
        "placed",
        "pool",
        "size",
        "status",
        "transport",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: _Pool) -> None:
        self._loop = loop
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.closed = False
        self.placed = True  # counted in its pool's size until closed (given back once, by _Pool.free)
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._paused = False
        self._reset(head_only=False)

    def _reset(self, *, head_only: bool) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.head_done = self.complete = self.keep_alive = self._interim = False
        self.error: UpstreamUnavailable | None = None
        self._head_bytes = 0
        self._head_only = head_only

    def begin(self, *, head_only: bool) -> None:
        """A new exchange: a fresh parser (a connection's previous one may have stopped mid-message on a HEAD)."""
        self._reset(head_only=head_only)
        self.parser = httptools.HttpResponseParser(self)

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and self.error is None and not self.closed

    # -- asyncio.Protocol ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None or self.complete or self.error is not None:
            # Bytes nobody asked for (after a complete response, or on an idle connection): whatever they are,
            # they must not be read as the next request's response.
            self._fail("RemoteProtocolError")
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # a 101 to a plain request: its head is all there is to pass on
            self.complete, self.keep_alive = self.head_done, False
        except httptools.HttpParserError:
            self._fail("RemoteProtocolError")
            return
        if not self.head_done:  # (a head and the body after it may come in one read: counted while no head)
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                self._fail("RemoteProtocolError")
                return
        if self.size > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        return False  # close: the upstream sends nothing more on this connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.parser is not None and not self.complete and self.error is None:
            if self.head_done and self._until_close():
                self.complete = True  # a body delimited by the connection's end: it ended
            else:
                self.error = _failure("ReadError" if exc is not None else "RemoteProtocolError")
        self._wake()
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)
        self.pool.lost(self)

    def pause_writing(self) -> None:
        self._drained = self._loop.create_future()

    def resume_writing(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- httptools callbacks -----------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.head_done:  # a second response to one request: parsing stops (feed_data raises), the first
            raise _Stop  # stands, the connection is closed

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # interim (100 Continue, 103 Early Hints): the answer follows
            self.headers = []
            self._interim = True
            return
        if sum(len(name) + len(value) for name, value in self.headers) > MAX_HEAD:
            raise _Stop  # a head too large read at once (one growing over reads: data_received)
        self.status, self.head_done = status, True
        if self._head_only:  # the parser cannot know the request was a HEAD: its answer ends with its head
            self.complete = True
            self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self.complete:  # a body after a HEAD's head: the answer stands, the connection does not
            self.keep_alive = False
            return
        self.chunks.append(body)
        self.size += len(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        assert self.parser is not None
        if self._head_only:  # complete since its head (a body, had one come, broke the connection in on_body)
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive() and self.status != 101

    # -- the caller's side -----------------------------------------------------------------------------

    def _until_close(self) -> bool:
        """Is the body delimited by the end of the connection (neither a length nor chunked)?"""
        if self._head_only or self.status in (204, 304):
            return False
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _fail(self, name: str) -> None:
        if self.error is None:
            self.error = _failure(name)
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float, name: str) -> None:
        """Until :meth:`data_received` or :meth:`connection_lost` brings news; ``name`` times out after
        ``timeout`` seconds (the connection is then useless: its response would come later)."""
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        except TimeoutError:
            self._fail(name)
            assert self.error is not None
            raise self.error from None
        finally:
            timer.cancel()
            self._waiter = None

    async def drain(self, timeout: float) -> None:
        drained = self._drained
        if drained is None or self.closed:
            return
        try:
            await asyncio.wait_for(asyncio.shield(drained), timeout)
        except TimeoutError:
            self._fail("WriteTimeout")
            assert self.error is not None
            raise self.error from None

    def take(self) -> bytes:
        """The body bytes received so far (reading resumes if it was paused)."""
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        self.size = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def close(self) -> None:
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class UpstreamResponse:
    """An upstream's answer: ``status``, ``headers`` as received (raw names), and its body by :meth:`receive`.
    :meth:`release` must follow (``finally``): the connection goes back to its pool only if the body was read to
    its end, and is closed otherwise."""

    __slots__ = ("_conn", "_read", "_released", "headers", "status")

    def __init__(self, conn: _Connection, read: float) -> None:
        self._conn, self._read, self._released = conn, read, False
        self.status, self.headers = conn.status, conn.headers

    async def receive(self) -> tuple[bytes, bool]:
        """The body bytes that arrived since the last call (waiting up to the read timeout for some), and whether
        the body is complete with them. Raises :class:`UpstreamUnavailable` if the upstream failed mid-body."""
        conn = self._conn
        while not conn.chunks and not conn.complete:
            if conn.error is not None:
                raise conn.error
            await conn.wait(self._read, "ReadTimeout")
        if conn.chunks:
            return conn.take(), conn.complete
        return b"", True

    def release(self) -> None:
        """Give the connection back (complete response) or close it (anything else). Idempotent."""
        if not self._released:
            self._released = True
            self._conn.pool.release(self._conn)


class _Pool:
    """Up to ``size`` connections to one address: idle ones reused last-in first-out (the warmest), requests
    beyond ``size`` wait their turn, first come first served."""

    __slots__ = ("_idle", "_open", "_waiters", "count", "size")

    def __init__(self, size: int, open_connection: Callable[[_Pool, float], Any]) -> None:
        self.size = size
        self._open = open_connection
        self._idle: list[_Connection] = []
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.count = 0  # connections open or opening, idle or in use

    async def acquire(self, timeout: float, connect: float) -> _Connection:
        """A connection for one exchange: an idle one, else a new one (opened within ``connect`` seconds), else
        the first one given back within ``timeout`` seconds (``PoolTimeout``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            idle = self._idle
            while idle:
                conn = idle.pop()
                transport = conn.transport
                if not conn.closed and transport is not None and not transport.is_closing():
                    return conn
                # Closed while idle (the upstream's keep-alive timeout): nothing was sent on it, so the request
                # goes on another connection.
                self.free(conn)
            if self.count < self.size:
                self.count += 1
                try:
                    opened: _Connection = await self._open(self, connect)
                except BaseException:
                    self.count -= 1
                    self._next()
                    raise
                return opened
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, deadline - loop.time())
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():  # woken, but leaving (timed out, cancelled):
                    self._next()  # the place it was woken for goes to the next in line
                if isinstance(exc, TimeoutError):
                    raise _failure("PoolTimeout") from None
                raise
            finally:
                if not waiter.done():
                    waiter.cancel()
                if waiter in self._waiters:  # not woken (_next takes those out)
                    self._waiters.remove(waiter)

    def release(self, conn: _Connection) -> None:
        if conn.reusable:
            conn.parser = None
            self._idle.append(conn)
            self._next()
        else:
            conn.close()
            self.free(conn)

    def lost(self, conn: _Connection) -> None:
        """The connection closed (by either side): an idle one's place is free (one in use is freed when its
        caller releases it)."""
        if conn in self._idle:
            self._idle.remove(conn)
            self.free(conn)

    def free(self, conn: _Connection) -> None:
        """Give ``conn``'s place back (once) and let the first waiter take it."""
        if conn.placed:
            conn.placed = False
            self.count -= 1
            self._next()

    def _next(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class UpstreamClient:
    """Keep-alive pools to ``url`` (``http://`` or ``https://``, verified with ``ssl_context``, by default
    :func:`tls_context`), sized by ``limits``: ``pools`` pools of ``connections`` each, used in turn."""

    def __init__(self, url: str, limits: UpstreamLimits, *, ssl_context: ssl.SSLContext | None = None) -> None:
        split = urlsplit(url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise ValueError("the upstream must be an http:// or https:// URL")
        self.host = split.hostname
        self.port = split.port or (443 if split.scheme == "https" else 80)
        self._ssl = (ssl_context or tls_context()) if split.scheme == "https" else None
        self._prefix = split.path.rstrip("/")  # an upstream at a path: every target goes under it
        self._host_header = b"Host: " + split.netloc.rpartition("@")[2].encode("idna") + b"\r\n"
        self.limits = limits
        self._pools = [_Pool(limits.connections, self._connect) for _ in range(limits.pools)]
        self._turn = 0

    async def _connect(self, pool: _Pool, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(loop, pool),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl is not None else None,
                    # the handshake counts in the connect timeout (wait_for's, which names it): asyncio's own
                    # limit (60 s by default) set beyond it
                    ssl_handshake_timeout=timeout + 1 if self._ssl is not None else None,
                ),
                timeout,
            )
        except TimeoutError:
            raise _failure("ConnectTimeout") from None
        except (OSError, ssl.SSLError):
            raise _failure("ConnectError") from None
        return conn

    def _head(self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
        lines = [f"{method} {self._prefix}{target} HTTP/1.1\r\n".encode("latin-1"), self._host_header]
        lines += [name + b": " + value + b"\r\n" for name, value in headers]
        if body or method in _BODY_METHODS:
            lines.append(b"Content-Length: %d\r\n" % len(body))
        lines.append(b"\r\n")
        head = b"".join(lines)
        # A CR or LF inside a name, value or the target would end a line early: another header or a second request
        # smuggled into the connection. One count over the whole head finds any.
        if head.count(b"\n") != len(lines) or head.count(b"\r") != len(lines) or b"\0" in head:
            raise _failure("LocalProtocolError")
        if lines[0].count(b" ") != 2:  # a space in the target would make the rest of it the protocol version
            raise _failure("LocalProtocolError")
        return head

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
        limits: UpstreamLimits | None = None,
    ) -> UpstreamResponse:
        """Send ``method target`` (under the upstream URL's path) with ``headers`` (neither ``Host`` nor
        ``Content-Length``: they are added) and ``body``; the response once its head arrived. ``limits`` gives
        the timeouts (default: the client's). Raises :class:`UpstreamUnavailable` named after what failed."""
        limits = limits or self.limits
        head = self._head(method, target, headers, body)
        self._turn = (self._turn + 1) % len(self._pools)
        pool = self._pools[self._turn]
        conn = await pool.acquire(limits.pool, limits.connect)
        conn.begin(head_only=method == "HEAD")
        transport = conn.transport
        assert transport is not None
        try:
            if len(body) <= _JOIN_BODY:
                transport.write(head + body)
            else:
                transport.write(head)
                transport.write(body)
            await conn.drain(limits.write)
            while not conn.head_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait(limits.read, "ReadTimeout")
        except BaseException:
            pool.release(conn)  # not complete: closed
            raise
        return UpstreamResponse(conn, limits.read)

    async def aclose(self) -> None:
        """Close the idle connections (those in use close as their responses end)."""
        for pool in self._pools:
            pool.close()
