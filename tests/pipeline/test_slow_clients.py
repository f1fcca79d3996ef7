"""Clients that send slowly or never finish cannot pin the proxy's memory or connections.

``authmw proxy`` runs as a real process; every request is raw bytes on a socket. A request whose head already
fails (unknown access key) is refused before its body is read; a head or body that does not arrive in time gets
408; the bodies held at once stay within ``body_budget`` (503 beyond).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from websockets.sync.client import connect

from authmw.proxy.server import header_deadline_protocol
from tests.support.forms import running
from tests.support.proxy import proxy_process
from tests.support.raw import JOBS, Ctx, Raw, head_of, signed, status_of
from tests.support.servers import serve_asgi
from tests.support.world import Key, World, echo_asgi

MIB = 1024 * 1024


def rss(pid: int) -> int:
    """The resident set of process ``pid``, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def send_some(sock: socket.socket, data: bytes, timeout: float) -> int:
    """Send as much of ``data`` as the peer takes within ``timeout``; the number of bytes sent."""
    sock.settimeout(timeout)
    sent = 0
    with contextlib.suppress(OSError):
        while sent < len(data):
            sent += sock.send(data[sent : sent + 256 * 1024])
    return sent


@contextlib.contextmanager
def proxy(world: World, tmp_path: Path, config: str) -> Iterator[tuple[int, str]]:
    with proxy_process(world, tmp_path, config) as (process, url, _audit):
        yield process.pid, url


def test_unauthenticated_half_sent_bodies_do_not_grow_the_proxy(world: World, tmp_path: Path) -> None:
    """24 clients with an unknown access key announce 12 MiB bodies and send 6 MiB each, never the rest: the
    proxy answered none and held every byte (48 → 390 MB). Now each gets 401 while still holding its body."""
    stranger = Key("UNKNOWNACCESSKEY0000", "not-a-secret")
    with proxy(world, tmp_path, "unmatched: deny\n") as (pid, url):
        split = urlsplit(url)
        before = rss(pid)
        path = JOBS.replace("{p}", world.project)
        sockets = [socket.create_connection((split.hostname or "", split.port or 80)) for _ in range(24)]
        results: list[tuple[int, int]] = [(0, 0)] * len(sockets)

        def client(i: int) -> None:
            sock = sockets[i]
            sock.sendall(head_of(split.netloc, stranger, 12 * MIB - 1, path))
            sent = send_some(sock, b"x" * (6 * MIB), 3.0)
            results[i] = (status_of(sock, 5.0)[0], sent)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(sockets))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        grown = rss(pid) - before
        for sock in sockets:
            sock.close()
    assert [status for status, _sent in results] == [401] * len(sockets)
    assert all(sent < 12 * MIB - 1 for _status, sent in results)  # answered before the body was complete
    assert grown < 40 * MIB, f"the proxy grew by {grown / MIB:.0f} MiB"


def test_a_body_that_does_not_arrive_in_time_gets_408(world: World, tmp_path: Path) -> None:
    with proxy(world, tmp_path, "body_timeout: 1\n") as (_pid, url):
        split = urlsplit(url)
        with socket.create_connection((split.hostname or "", split.port or 80)) as sock:
            sock.sendall(head_of(split.netloc, world.scientist, 1000, JOBS.replace("{p}", world.project)) + b"{")
            started = time.monotonic()
            status, head = status_of(sock, 10.0)
    assert status == 408 and b"application/json" in head
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("after_a_request", [False, True], ids=["first-request", "next-request-on-keep-alive"])
def test_a_head_that_does_not_arrive_in_time_gets_408(world: World, tmp_path: Path, after_a_request: bool) -> None:
    """A dripped head held its connection forever (uvicorn's keep-alive timer stops at the first byte)."""
    with proxy(world, tmp_path, "header_timeout: 1\n") as (_pid, url):
        split = urlsplit(url)
        with socket.create_connection((split.hostname or "", split.port or 80)) as sock:
            if after_a_request:
                sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {split.netloc}\r\n\r\n".encode())
                received = b""
                while not received.endswith(b'{"status":"ok"}'):
                    received += sock.recv(65536)
            sock.sendall(f"GET /v1/{world.project}/notebooks HTTP/1.1\r\nHost: {split.netloc}\r\nX-Sdk-Date: ".encode())
            started = time.monotonic()
            status, head = status_of(sock, 10.0)
    assert status == 408 and b"application/json" in head
    assert time.monotonic() - started < 5


# -- the head deadline under both of uvicorn's parsers, in process ------------------------------------------------

DEADLINE = 1.0
PROTOCOLS = ["httptools", "h11"]


async def slow_echo(scope: Any, receive: Any, send: Any) -> None:
    """Echo, but a ``/slow`` request is answered after twice the head deadline."""
    if scope["type"] == "http" and scope["path"] == "/slow":
        await asyncio.sleep(2 * DEADLINE)
    await echo_asgi(scope, receive, send)


@contextlib.contextmanager
def deadline_server(http: str) -> Iterator[tuple[str, int]]:
    """``slow_echo`` served by uvicorn with the proxy's protocol (``http``'s parser, a head deadline of
    ``DEADLINE`` seconds), on uvloop for httptools as the proxy runs it."""
    protocol = header_deadline_protocol(DEADLINE, http)
    with serve_asgi(slow_echo, http=protocol, loop="uvloop" if http == "httptools" else "asyncio") as url:
        split = urlsplit(url)
        yield split.hostname or "", split.port or 80


def read_all(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything received until the peer closes (or ``timeout``), and when the close came."""
    sock.settimeout(timeout)
    received = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            received += chunk
    return received, time.monotonic()


def read_answer(sock: socket.socket) -> bytes:
    """One whole answer of ``slow_echo`` (chunked)."""
    received = b""
    while not received.endswith(b"\r\n0\r\n\r\n"):
        received += sock.recv(65536)
    return received


def answer(host: str) -> bytes:
    return f"GET /fast HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


@pytest.mark.parametrize("http", PROTOCOLS)
@pytest.mark.parametrize("after_a_request", [False, True], ids=["first-request", "next-request-on-keep-alive"])
def test_a_dripped_head_gets_408_at_the_deadline(http: str, after_a_request: bool) -> None:
    """A head dripped a byte at a time (each byte would stop uvicorn's keep-alive timer) is cut at the deadline,
    counted from the connection or from the previous response: 408 ``request_timeout`` and the connection
    closed."""
    with deadline_server(http) as address, socket.create_connection(address) as sock:
        started = time.monotonic()
        if after_a_request:
            sock.sendall(answer("a"))
            assert read_answer(sock).startswith(b"HTTP/1.1 200 ")
            started = time.monotonic()  # the next head's deadline starts when the response ended
            time.sleep(DEADLINE / 2)
        with contextlib.suppress(OSError):
            for byte in b"GET /fast HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * 100:
                sock.send(bytes([byte]))
                time.sleep(0.05)
                if time.monotonic() - started > 3 * DEADLINE:
                    break
        received, closed = read_all(sock, 5.0)
    assert received.startswith(b"HTTP/1.1 408 ") and b"request_timeout" in received, received[:300]
    assert b"application/json" in received
    assert DEADLINE * 0.9 <= closed - started < DEADLINE + 1.5


@pytest.mark.parametrize("http", PROTOCOLS)
@pytest.mark.parametrize("after_a_request", [False, True], ids=["new", "after-a-request"])
def test_an_idle_connection_is_closed_without_a_word(http: str, after_a_request: bool) -> None:
    with deadline_server(http) as address, socket.create_connection(address) as sock:
        if after_a_request:
            sock.sendall(answer("a"))
            read_answer(sock)
        started = time.monotonic()
        received, closed = read_all(sock, 5.0)
    assert received == b""
    assert closed - started < DEADLINE + 1.5


@pytest.mark.slow
@pytest.mark.parametrize("http", PROTOCOLS)
def test_the_deadline_is_the_heads_alone(http: str) -> None:
    """A request whose head arrived is not cut: not while the app takes longer than the deadline, not while the
    next requests wait in the pipeline behind it, not while a body arrives slowly."""
    with deadline_server(http) as address, socket.create_connection(address) as sock:
        slow, fast = b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n", answer("a")
        post = b"POST /fast HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
        sock.sendall(slow + fast + post)
        for byte in b"abc":  # the body's last byte comes after 2 s of the slow answer and 2.1 s of dripping
            time.sleep(DEADLINE * 0.7)
            sock.sendall(bytes([byte]))
        received, _closed = read_all(sock, 10.0)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", received) == [b"200"] * 3, received[:600]
    assert b'"body_length": 3' in received


@pytest.mark.parametrize("http", PROTOCOLS)
def test_a_websocket_outlives_the_head_deadline(http: str) -> None:
    with deadline_server(http) as (host, port), connect(f"ws://{host}:{port}/ws") as ws:
        time.sleep(DEADLINE * 1.5)
        ws.send("still there")
        assert ws.recv(timeout=5).endswith("still there")


def test_bodies_beyond_the_budget_get_503(world: World, tmp_path: Path) -> None:
    with proxy(world, tmp_path, "body_budget: 65536\nbody_timeout: 5\n") as (_pid, url):
        split = urlsplit(url)
        address = (split.hostname or "", split.port or 80)
        path = JOBS.replace("{p}", world.project)
        with socket.create_connection(address) as first, socket.create_connection(address) as second:
            first.sendall(head_of(split.netloc, world.scientist, 50_000, path) + b"x" * 40_000)
            time.sleep(0.5)  # the first body's bytes are held
            second.sendall(head_of(split.netloc, world.scientist, 50_000, path) + b"x" * 40_000)
            status, head = status_of(second, 5.0)
            assert status == 503 and b"retry-after: 1" in head.lower()
            first.sendall(b"x" * 10_000)  # the first completes and is checked as usual
            assert status_of(first, 5.0)[0] in (200, 401)


@pytest.mark.parametrize("form", ["asgi", "wsgi"])
def test_the_middleware_refuses_an_unknown_key_before_reading_the_body(world: World, form: str) -> None:
    stranger = Key("UNKNOWNACCESSKEY0000", "not-a-secret")
    with running(form, world) as started:
        split = urlsplit(started.url)
        with socket.create_connection((split.hostname or "", split.port or 80)) as sock:
            sock.sendall(head_of(split.netloc, stranger, 4 * MIB, JOBS.replace("{p}", world.project)) + b"x" * 1000)
            status, _head = status_of(sock, 5.0)
    assert status == 401


def test_a_signed_body_is_still_read_and_checked(world: World) -> None:
    """The precheck only refuses what the head decides: a good request with a body goes through as before."""
    with running("proxy", world) as started:
        split = urlsplit(started.url)
        raw: Raw = signed(Ctx(world, split.netloc), "POST", JOBS, headers={"Content-Type": "application/json"},
                          body=b'{"kind": "job"}')  # fmt: skip
        with socket.create_connection((split.hostname or "", split.port or 80)) as sock:
            sock.sendall(raw.encode())
            assert status_of(sock, 5.0)[0] == 200


@pytest.mark.slow
def test_half_sent_bodies_of_a_known_key_id_stay_within_the_budget_and_time_out(world: World, tmp_path: Path) -> None:
    """An access key id is no secret: with one, a client passes the head's precheck (the signature needs the
    body). 24 such clients announcing 12 MiB and sending 4 MiB each: the bodies held stay within ``body_budget``
    (503 beyond it), and every client still holding one gets 408 at ``body_timeout``."""
    forger = Key(world.scientist.access, "not-the-secret")
    config = f"body_timeout: 2\nbody_budget: {32 * MIB}\n"
    with proxy(world, tmp_path, config) as (pid, url):
        split = urlsplit(url)
        before = rss(pid)
        path = JOBS.replace("{p}", world.project)
        sockets = [socket.create_connection((split.hostname or "", split.port or 80)) for _ in range(24)]
        statuses = [0] * len(sockets)
        peak = [0]

        def client(i: int) -> None:
            sock = sockets[i]
            sock.sendall(head_of(split.netloc, forger, 12 * MIB - 1, path))
            send_some(sock, b"x" * (4 * MIB), 1.5)
            peak[0] = max(peak[0], rss(pid) - before)
            statuses[i] = status_of(sock, 10.0)[0]

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(sockets))]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        elapsed = time.monotonic() - started
        for sock in sockets:
            sock.close()
    assert set(statuses) <= {408, 503} and 408 in statuses, statuses
    assert elapsed < 15
    assert peak[0] < 32 * MIB + 40 * MIB, f"the proxy grew by {peak[0] / MIB:.0f} MiB"
