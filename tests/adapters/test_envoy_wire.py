"""authz's own HTTP/1.1 server (authmw.envoy.wire) on raw sockets: keep-alive and pipelining, bodies streamed to
the app (and ``100-continue``), HEAD, refusals of what cannot be parsed, a failing app, a header that would split
the answer, an unread body, the connection limit, and the drain on stop. Envoy's side is test_envoy's."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from authmw.envoy.wire import serve_http
from tests.support.world import whole_body


class App:
    """Answers ``/echo`` with the method, path, query and body it got; ``/slow`` after 2 s; ``/boom`` raises;
    ``/silent`` answers nothing; ``/split`` sends a header with CRLF; ``/early`` answers 413 unread; ``/parts``
    sends its body in three messages."""

    def __init__(self) -> None:
        self.lifespan: list[str] = []
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.lifespan.append(message["type"])
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        self.calls += 1
        path = scope["path"]
        start = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        if path == "/boom":
            raise RuntimeError("boom")
        if path == "/silent":
            return
        if path == "/split":
            await send({**start, "headers": [(b"x-evil", b"a\r\nset-cookie: x=1")]})
            await send({"type": "http.response.body", "body": b"no"})
            return
        if path == "/early":
            await send({"type": "http.response.start", "status": 413, "headers": []})
            await send({"type": "http.response.body", "body": b"too large"})
            return
        if path == "/slow":
            await asyncio.sleep(2.0)
        if path == "/parts":
            await send(start)
            for part in (b"a", b"b"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b"c"})
            return
        body = await whole_body(receive)
        text = f"{scope['method']} {scope['path']} {scope['raw_path'].decode()} {scope['query_string'].decode()} "
        await send(start)
        await send({"type": "http.response.body", "body": text.encode() + body})


@contextlib.contextmanager
def serving(app: App, **options: Any) -> Iterator[tuple[tuple[str, int], threading.Event]]:
    """serve_http on a thread of its own; yields its address and an event that stops it (the drain)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    stopped = threading.Event()
    done: list[BaseException | None] = []

    def run() -> None:
        try:
            loop.run_until_complete(serve_http(app, host="127.0.0.1", port=port, stop=stop, **options))
            done.append(None)
        except BaseException as exc:  # reported by the test
            done.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline and not done, done
            time.sleep(0.02)
    watcher = threading.Thread(target=lambda: (stopped.wait(), loop.call_soon_threadsafe(stop.set)), daemon=True)
    watcher.start()
    try:
        yield ("127.0.0.1", port), stopped
    finally:
        stopped.set()
        thread.join(40)
        loop.close()
    assert done == [None], done


def read_answers(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` answers off ``sock`` (by Content-Length), and nothing after them if the server closed."""
    data = b""
    answers = []
    while len(answers) < count:
        head, found, rest = data.partition(b"\r\n\r\n")
        if found:
            lines = head.decode().split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            length = int(headers["content-length"])
            if len(rest) >= length:
                answers.append((int(lines[0].split()[1]), headers, rest[:length]))
                data = rest[length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(answers)} answers: {data!r}"
        data += chunk
    return answers


def closed(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_keep_alive_and_pipelined_requests_are_answered_in_order() -> None:
    app = App()
    with serving(app) as (address, _stop), socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"GET /echo/a%2Fb?x=1 HTTP/1.1\r\nHost: h\r\n\r\n")
        [(status, headers, body)] = read_answers(sock, 1)
        assert (status, body) == (200, b"GET /echo/a/b /echo/a%2Fb x=1 ")
        assert headers["content-type"] == "text/plain" and "connection" not in headers
        pipelined = b"".join(
            f"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: {len(x)}\r\n\r\n{x}".encode() for x in ("one", "two")
        )
        sock.sendall(pipelined + b"GET /parts HTTP/1.1\r\nHost: h\r\n\r\n")
        answers = read_answers(sock, 3)
        assert [body for _s, _h, body in answers] == [b"POST /echo /echo  one", b"POST /echo /echo  two", b"abc"]
    assert app.lifespan == ["lifespan.startup", "lifespan.shutdown"]


def test_a_body_in_pieces_and_a_chunked_one_reach_the_app_whole() -> None:
    with serving(App()) as (address, _stop), socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"PUT /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"abc")
        time.sleep(0.05)
        sock.sendall(b"def")
        assert read_answers(sock, 1)[0][2] == b"PUT /echo /echo  abcdef"
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n")
        assert read_answers(sock, 1)[0][2] == b"POST /echo /echo  xyz"


def test_head_gets_the_length_without_the_body() -> None:
    with serving(App()) as (address, _stop), socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"HEAD /echo HTTP/1.1\r\nHost: h\r\n\r\nGET /echo HTTP/1.1\r\nHost: h\r\n\r\n")
        time.sleep(0.2)
        data = sock.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert b"content-length: 18" in head.lower()  # "HEAD /echo /echo  "
        assert rest.startswith(b"HTTP/1.1 200 ")  # the next answer, not a body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\n\r\n",
    ],
)
def test_what_cannot_be_parsed_is_400_and_closed(request_bytes: bytes) -> None:
    app = App()
    with serving(app) as (address, _stop), socket.create_connection(address, timeout=10) as sock:
        sock.sendall(request_bytes)
        [(status, headers, _body)] = read_answers(sock, 1)
        assert (status, headers["connection"]) == (400, "close")
        assert closed(sock)
    assert app.calls == 0


@pytest.mark.parametrize("path", ["/boom", "/silent", "/split"])
def test_an_app_that_fails_gets_a_500_and_a_close_never_a_split_answer(path: str) -> None:
    with serving(App()) as (address, _stop), socket.create_connection(address, timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        [(status, headers, body)] = read_answers(sock, 1)
        assert (status, body) == (500, b"Internal Server Error")
        assert "set-cookie" not in headers
        assert closed(sock)


def test_a_body_the_app_left_unread_closes_the_connection_after_the_answer() -> None:
    with serving(App()) as (address, _stop), socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"POST /early HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        [(status, _headers, body)] = read_answers(sock, 1)
        assert (status, body) == (413, b"too large")
        assert closed(sock)


def test_connections_beyond_the_limit_get_503() -> None:
    with (
        serving(App(), max_connections=1) as (address, _stop),
        socket.create_connection(address, timeout=10) as first,
        socket.create_connection(address, timeout=10) as second,
    ):
        time.sleep(0.1)
        second.sendall(b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_answers(second, 1)[0][0] == 503
        assert closed(second)
        time.sleep(0.1)
        first.sendall(b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_answers(first, 1)[0][0] == 200


@pytest.mark.slow
def test_the_drain_answers_the_checks_in_flight_and_closes_the_rest() -> None:
    app = App()
    with serving(app) as (address, stop):
        idle = socket.create_connection(address, timeout=10)
        busy = socket.create_connection(address, timeout=10)
        busy.sendall(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
        time.sleep(0.1)
        stopping = time.monotonic()
        stop.set()
        assert closed(idle)
        assert time.monotonic() - stopping < 1.5  # at once, not after the check in flight (2 s)
        [(status, _headers, body)] = read_answers(busy, 1)
        assert (status, body) == (200, b"GET /slow /slow  ")
        assert closed(busy)
        with pytest.raises(OSError):
            socket.create_connection(address, timeout=2).close()
        idle.close()
        busy.close()
    assert app.lifespan[-1] == "lifespan.shutdown"


@pytest.mark.slow
def test_an_idle_connection_is_closed_after_keep_alive_and_a_used_one_later() -> None:
    with serving(App(), keep_alive=2.0) as (address, _stop), socket.create_connection(address, timeout=10) as sock:
        time.sleep(1.2)
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_answers(sock, 1)[0][0] == 200
        answered = time.monotonic()
        time.sleep(1.2)  # past the first deadline (2 s after connecting), within the one the request moved it to
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_answers(sock, 1)[0][0] == 200
        assert closed(sock)
        assert time.monotonic() - answered > 2.4


def test_an_upgrade_request_is_answered_as_the_plain_request_it_is_then_closed() -> None:
    """Envoy never sends one (the check carries neither Connection nor Upgrade); a client that does gets the app's
    answer to the request and a closed connection, never a protocol switch."""
    with serving(App()) as (address, _stop), socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        [(status, headers, body)] = read_answers(sock, 1)
        assert (status, body, headers["connection"]) == (200, b"GET /echo /echo  ", "close")
        assert closed(sock)


@pytest.mark.slow
def test_a_client_that_does_not_read_its_answers_is_not_read_either() -> None:
    """Pipelined requests sent without reading an answer: once the answers back up, the server stops reading (the
    client's sending stalls) instead of holding every answer in memory."""
    request = b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\n"
    total = 1_000_000 * len(request)  # 31 MB of requests: more than the kernel's buffers hold
    with serving(App()) as (address, _stop), socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        sock.connect(address)
        sock.settimeout(2)
        sent = 0
        data = request * 1000
        with contextlib.suppress(TimeoutError):
            while sent < total:
                sent += sock.send(data)
        assert sent < total / 2, sent
