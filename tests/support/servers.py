"""Real servers on ephemeral 127.0.0.1 ports for end-to-end tests: uvicorn (ASGI) and werkzeug (WSGI)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from werkzeug.serving import make_server

# Whether the server at a base URL is handling a request, for the servers started here.
_BUSY: dict[str, Callable[[], bool]] = {}


def wait_idle(url: str, timeout: float = 10.0) -> None:
    """Wait until the server at ``url`` (from :func:`serve_asgi` or :func:`serve_wsgi`) handles no request: an
    app it started for a request it has answered or dropped has returned by then. Tests that show an app was
    NOT called wait on this instead of sleeping."""
    busy = _BUSY[url]
    deadline = time.monotonic() + timeout
    while busy():
        assert time.monotonic() < deadline, f"{url} is still handling a request after {timeout} s"
        time.sleep(0.005)


def _candidate_ports() -> Iterator[int]:
    """Ports below the kernel's ephemeral range, which it never hands out by itself: a port chosen here is not
    taken by some outgoing connection before the child process binds it. Each xdist worker has a slice of its own
    (no collision across workers), entered at a random point (seldom one with another test run on the machine)."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 0
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    size = (ephemeral_low - _FIRST_PORT) // workers
    if size < 100:  # no room below the ephemeral range: let the kernel choose
        return itertools.repeat(0)
    start, offset = _FIRST_PORT + worker * size, random.randrange(size)
    return itertools.cycle([start + (offset + i) % size for i in range(size)])


_FIRST_PORT = 10_000
_PORTS = _candidate_ports()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and that no other test of this run gets (for servers started as
    separate processes)."""
    for port in _PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise AssertionError("unreachable: the candidates never run out")


@contextlib.contextmanager
def serve_asgi(
    app: Any, *, ws: str = "websockets-sansio", http: str | type[asyncio.Protocol] = "h11", loop: str = "asyncio"
) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread; yields its base URL. ``http`` is uvicorn's HTTP implementation
    (a name or a protocol class), chosen explicitly: uvicorn's default picks httptools whenever it is installed,
    and the two parse malformed requests differently (each refuses some itself that the other hands to the app).
    ``loop``: ``"asyncio"`` or ``"uvloop"``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", proxy_headers=False, ws=ws, http=http)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop

    def run() -> None:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(server.serve(sockets=[sock]))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    _BUSY[url] = lambda: bool(server.server_state.tasks)  # uvicorn runs each request's app as one task
    try:
        yield url
    finally:
        del _BUSY[url]
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextlib.contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    """Serve ``app`` with werkzeug's threaded server; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    handling = [0]  # connections being handled, each on a thread of its own (the app runs on it)
    lock = threading.Lock()
    handle = server.process_request_thread

    def counted(request: Any, client_address: Any) -> None:
        with lock:
            handling[0] += 1
        try:
            handle(request, client_address)
        finally:
            with lock:
                handling[0] -= 1

    server.process_request_thread = counted  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    _BUSY[url] = lambda: handling[0] > 0
    try:
        yield url
    finally:
        del _BUSY[url]
        server.shutdown()
        thread.join(10)


@contextlib.contextmanager
def serve_wsgiref(app: Any) -> Iterator[str]:
    """Serve ``app`` with the standard library's wsgiref (it folds ``_`` in header names into ``-`` and has no
    REQUEST_URI); yields its base URL."""
    import socketserver
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
    from wsgiref.simple_server import make_server as make_wsgiref

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    class Threaded(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True

    server = make_wsgiref("127.0.0.1", 0, app, server_class=Threaded, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
