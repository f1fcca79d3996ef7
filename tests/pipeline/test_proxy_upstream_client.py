"""The proxy's upstream client (authmw.proxy.upstream): keep-alive reuse that never mixes responses, bodies of every
framing, TLS, timeouts, and upstreams that misbehave; then the same through ``authmw proxy``.

Upstreams: uvicorn (real HTTP/1.1, and TLS with a self-signed certificate) and scripted TCP servers that answer
whatever bytes a test gives them (a response cut short, bytes after a response, an interim 100, silence).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authmw.errors import UpstreamUnavailable
from authmw.proxy import build_app
from authmw.proxy.upstream import HIGH_WATER, MAX_HEAD, UpstreamClient, UpstreamLimits, UpstreamResponse
from authmw.signing import sign_request
from tests.support.forms import SETTINGS
from tests.support.servers import serve_asgi
from tests.support.world import World, whole_body

ONE = UpstreamLimits(pools=1, connections=4)  # one pool: sequential requests may reuse one connection
BIG = 4 * 1024 * 1024


async def peer_app(scope: Any, receive: Any, send: Any) -> None:
    """Answers which connection (the client's port) carried the request, and bodies of each framing."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = await whole_body(receive)
    path = scope["path"]
    if path == "/chunked":  # no length: uvicorn sends it chunked
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/big":
        chunk = b"x" * 65536
        length = [(b"content-length", b"%d" % BIG)]
        await send({"type": "http.response.start", "status": 200, "headers": length})
        for _ in range(BIG // len(chunk)):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path in ("/204", "/304"):
        status = int(path[1:])
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if path.endswith("/slow"):
        await asyncio.sleep(3)
    answer = json.dumps({
        "port": scope["client"][1], "method": scope["method"], "path": path, "body": body.decode("latin-1"),
        "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
    }).encode()  # fmt: skip
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


async def fetch(
    client: UpstreamClient, method: str = "GET", target: str = "/", headers: Any = (), body: bytes = b""
) -> tuple[UpstreamResponse, bytes]:
    response = await client.request(method, target, list(headers), body)
    try:
        chunks, done = [], False
        while not done:
            data, done = await response.receive()
            chunks.append(data)
    finally:
        response.release()
    return response, b"".join(chunks)


def run(test: Callable[[], Any]) -> Any:
    return asyncio.run(test())


# -- keep-alive, and responses never mixed -----------------------------------------------------------------


def test_sequential_requests_reuse_one_connection() -> None:
    with serve_asgi(peer_app) as url:

        async def test() -> list[int]:
            client = UpstreamClient(url, ONE)
            ports = [json.loads((await fetch(client, target=f"/{n}"))[1])["port"] for n in range(3)]
            await client.aclose()
            return ports

        ports = run(test)
    assert len(set(ports)) == 1, ports


def test_requests_beyond_the_pool_wait_their_turn() -> None:
    with serve_asgi(peer_app) as url:

        async def test() -> tuple[list[str], set[int], int]:
            client = UpstreamClient(url, UpstreamLimits(pools=1, connections=2))
            answers = await asyncio.gather(*(fetch(client, target=f"/{n}") for n in range(12)))
            seen = [json.loads(body) for _, body in answers]
            open_ = client._pools[0].count
            await client.aclose()
            return [answer["path"] for answer in seen], {answer["port"] for answer in seen}, open_

        paths, ports, open_ = run(test)
    assert paths == [f"/{n}" for n in range(12)]  # each its own answer
    assert len(ports) <= 2 and open_ <= 2


def test_a_response_not_read_to_its_end_closes_its_connection() -> None:
    with serve_asgi(peer_app) as url:

        async def test() -> tuple[int, dict[str, Any], int]:
            client = UpstreamClient(url, ONE)
            first = json.loads((await fetch(client, target="/first"))[1])
            response = await client.request("GET", "/big", [])
            data, done = await response.receive()  # some of the 4 MiB, then given up
            assert data and not done
            response.release()
            second = json.loads((await fetch(client, target="/second"))[1])  # its own answer, not /big's rest
            open_ = client._pools[0].count
            await client.aclose()
            return first["port"], second, open_

        first_port, second, open_ = run(test)
    assert second["path"] == "/second"
    assert second["port"] != first_port  # the connection that carried /big was not reused
    assert open_ == 1  # and its place in the pool was given back


def test_bytes_after_a_response_are_never_read_as_the_next_one() -> None:
    forged = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst" + forged,
        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond",
    ]
    with scripted(answers) as (url, seen):

        async def test() -> list[bytes]:
            client = UpstreamClient(url, ONE)
            bodies = [(await fetch(client))[1], (await fetch(client))[1]]
            await client.aclose()
            return bodies

        assert run(test) == [b"first", b"second"]
    assert [connection for connection, _ in seen] == [0, 1]  # the second went on a new connection


def test_an_upstream_closing_an_idle_connection_is_not_a_failure() -> None:
    """The upstream closes after each answer without saying so (a keep-alive timeout): the next request is not
    written to the dead connection, it goes on a new one."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    with scripted([answer, answer], close_after_each=True) as (url, seen):

        async def test() -> list[bytes]:
            client = UpstreamClient(url, ONE)
            first = (await fetch(client))[1]
            await asyncio.sleep(0.2)  # the upstream's FIN arrives while the connection is idle
            second = (await fetch(client))[1]
            await client.aclose()
            return [first, second]

        assert run(test) == [b"ok", b"ok"]
    assert [connection for connection, _ in seen] == [0, 1]


# -- bodies ----------------------------------------------------------------------------------------------


def test_chunked_length_and_until_close_bodies() -> None:
    with serve_asgi(peer_app) as url:

        async def test() -> tuple[UpstreamResponse, bytes, int, int]:
            client = UpstreamClient(url, ONE)
            response, body = await fetch(client, target="/chunked")
            port1 = json.loads((await fetch(client, "POST", "/after", body=b"payload"))[1])
            port2 = json.loads((await fetch(client, target="/again"))[1])
            await client.aclose()
            assert port1["body"] == "payload" and port1["headers"]["content-length"] == "7"
            return response, body, port1["port"], port2["port"]

        response, body, port1, port2 = run(test)
    assert body == b"one,two,three"
    assert (b"Transfer-Encoding", b"chunked") in response.headers  # as received: the proxy drops hop-by-hop names
    assert port1 == port2
    until_close = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it, until the end"
    with scripted([until_close], close_after_each=True) as (url, _seen):

        async def old() -> bytes:
            client = UpstreamClient(url, ONE)
            return (await fetch(client))[1]

        assert run(old) == b"all of it, until the end"


def test_head_204_and_304_answers_have_no_body_and_keep_the_connection() -> None:
    with serve_asgi(peer_app) as url:

        async def test() -> list[tuple[int, bytes, int | None]]:
            client = UpstreamClient(url, ONE)
            seen = []
            for method, target in (("HEAD", "/big"), ("GET", "/204"), ("GET", "/304"), ("HEAD", "/")):
                response, body = await fetch(client, method, target)
                seen.append((response.status, body, None))
            port = json.loads((await fetch(client, target="/last"))[1])["port"]
            ports = {port, json.loads((await fetch(client, target="/last"))[1])["port"]}
            seen.append((200, b"", len(ports)))
            await client.aclose()
            return seen

        seen = run(test)
    assert [status for status, _, _ in seen[:4]] == [200, 204, 304, 200]
    assert all(body == b"" for _, body, _ in seen)
    assert seen[4][2] == 1


def test_an_interim_100_continue_is_skipped() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone"
    with scripted([answer]) as (url, _seen):

        async def test() -> tuple[int, bytes]:
            client = UpstreamClient(url, ONE)
            response, body = await fetch(client, "PUT", "/x", [(b"expect", b"100-continue")], b"data")
            return response.status, body

        assert run(test) == (201, b"done")


def test_reading_stops_while_the_caller_does_not_read() -> None:
    with serve_asgi(peer_app) as url:

        async def test() -> tuple[int, int]:
            client = UpstreamClient(url, ONE)
            response = await client.request("GET", "/big", [])
            await asyncio.sleep(0.5)  # the caller (a slow client of the proxy) reads nothing for a while
            held = response._conn.size
            total, done = 0, False
            while not done:
                data, done = await response.receive()
                total += len(data)
            response.release()
            await client.aclose()
            return held, total

        held, total = run(test)
    assert held <= HIGH_WATER + 256 * 1024, held  # paused near the high-water mark, not the whole 4 MiB
    assert total == BIG


def test_a_head_beyond_its_limit_is_refused_but_a_large_body_in_one_read_is_not() -> None:
    body = b"y" * (2 * MAX_HEAD)
    whole = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body  # head and body in one send
    huge_head = b"HTTP/1.1 200 OK\r\nX-Filler: " + b"z" * (2 * MAX_HEAD) + b"\r\nContent-Length: 0\r\n\r\n"
    with scripted([whole, huge_head]) as (url, _seen):

        async def test() -> tuple[bytes, str]:
            client = UpstreamClient(url, ONE)
            received = (await fetch(client))[1]
            with pytest.raises(UpstreamUnavailable) as failed:
                await client.request("GET", "/", [])
            return received, failed.value.detail

        received, detail = run(test)
    assert received == body
    assert detail == "RemoteProtocolError"


def test_a_header_that_would_split_the_request_is_never_sent() -> None:
    with scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]) as (url, seen):

        async def test() -> list[str]:
            client = UpstreamClient(url, ONE)
            details = []
            for target, headers in (
                ("/", [(b"x-note", b"a\r\nX-Authmw-User-Id: admin")]),
                ("/", [(b"x-note", b"a\nX-Authmw-User-Id: admin")]),
                ("/ HTTP/1.1\r\nX-Authmw-User-Id: admin\r\nX:", []),
                ("/a b", []),
            ):
                with pytest.raises(UpstreamUnavailable) as failed:
                    await client.request("GET", target, headers)
                details.append(failed.value.detail)
            return details

        assert run(test) == ["LocalProtocolError"] * 4
    assert seen == []


# -- failures ----------------------------------------------------------------------------------------------


def test_an_upstream_dying_mid_body_is_an_error_after_what_arrived() -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"
    chunked_cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    for answer in (cut, chunked_cut):
        with scripted([answer], close_after_each=True) as (url, _seen):

            async def test() -> tuple[bytes, str, int]:
                client = UpstreamClient(url, ONE)
                response = await client.request("GET", "/", [])
                data, done = await response.receive()  # what arrived
                assert not done
                with pytest.raises(UpstreamUnavailable) as failed:
                    await response.receive()
                response.release()
                return data, failed.value.detail, client._pools[0].count

            data, detail, open_ = run(test)
        assert data in (b"0123456789", b"hello")
        assert detail == "RemoteProtocolError" and open_ == 0


def test_an_upstream_closing_without_an_answer_fails_the_request() -> None:
    with scripted([b""], close_after_each=True) as (url, _seen):

        async def test() -> str:
            client = UpstreamClient(url, ONE)
            with pytest.raises(UpstreamUnavailable) as failed:
                await client.request("POST", "/", [], b"once")
            return failed.value.detail

        assert run(test) == "RemoteProtocolError"


def test_timeouts() -> None:
    quick = UpstreamLimits(pools=1, connections=1, connect=0.3, read=0.3, write=0.3, pool=0.3)
    with scripted([None]) as (url, _seen):  # reads the request, never answers

        async def read() -> tuple[str, int]:
            client = UpstreamClient(url, quick)
            with pytest.raises(UpstreamUnavailable) as failed:
                await client.request("GET", "/", [])
            return failed.value.detail, client._pools[0].count

        assert run(read) == ("ReadTimeout", 0)  # and the connection was given up
    with serve_asgi(peer_app) as url:

        async def pool() -> list[str]:
            client = UpstreamClient(url, quick)
            held = await client.request("GET", "/big", [])  # the pool's one connection, in use
            with pytest.raises(UpstreamUnavailable) as failed:
                await client.request("GET", "/", [])
            held.release()
            after = json.loads((await fetch(client, target="/after"))[1])["path"]
            await client.aclose()
            return [failed.value.detail, after]

        assert run(pool) == ["PoolTimeout", "/after"]
    with silent_listener() as port:  # accepts, never completes a TLS handshake

        async def connect() -> str:
            client = UpstreamClient(f"https://127.0.0.1:{port}", quick)
            with pytest.raises(UpstreamUnavailable) as failed:
                await client.request("GET", "/", [])
            return failed.value.detail

        assert run(connect) == "ConnectTimeout"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]

    async def refused() -> str:
        client = UpstreamClient(f"http://127.0.0.1:{closed}", quick)
        with pytest.raises(UpstreamUnavailable) as failed:
            await client.request("GET", "/", [])
        return failed.value.detail

    assert run(refused) == "ConnectError"


# -- TLS -------------------------------------------------------------------------------------------------


def test_an_https_upstream_with_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with serve_tls(peer_app, cert, key) as url:

        async def trusted() -> list[int]:
            client = UpstreamClient(url, ONE, ssl_context=ssl.create_default_context(cafile=str(cert)))
            ports = [json.loads((await fetch(client, target="/tls"))[1])["port"] for _ in range(2)]
            big = await fetch(client, target="/big")
            await client.aclose()
            return [*ports, len(big[1])]

        first, second, size = run(trusted)
        assert first == second and size == BIG  # kept alive over TLS

        async def untrusted() -> str:
            client = UpstreamClient(url, ONE)  # the default bundle does not hold the self-signed certificate
            with pytest.raises(UpstreamUnavailable) as failed:
                await client.request("GET", "/", [])
            return failed.value.detail

        assert run(untrusted) == "ConnectError"


# -- through authmw proxy ----------------------------------------------------------------------------------


def signed(world: World, url: str, method: str, body: bytes = b"", **extra: str) -> tuple[str, dict[str, str]]:
    headers = {"X-Nonce": os.urandom(8).hex(), "Content-Type": "application/json", **extra}
    out = sign_request(method, f"{url}/v1/{world.project}/notebooks", headers, body,
                       access_key=world.scientist.access, secret_key=world.scientist.secret)  # fmt: skip
    return out.url, dict(out.headers)


def test_the_proxy_forwards_over_kept_alive_connections_and_streams_bodies(world: World) -> None:
    settings = replace(SETTINGS, upstream_pools=1, upstream_pool_connections=2)
    with (
        serve_asgi(peer_app) as upstream,
        serve_asgi(build_app(replace(settings, upstream=upstream), world.store)) as url,
    ):
        ports = set()
        with httpx.Client(timeout=30) as client:
            for _ in range(4):
                target, headers = signed(world, url, "GET")
                answer = client.get(target, headers=headers)
                assert answer.status_code == 200, answer.text
                ports.add(answer.json()["port"])
            body = b'{"name": "nb"}' * 1000

            def chunks() -> Iterator[bytes]:  # a chunked request body, with Expect: 100-continue
                yield body[:5000]
                yield body[5000:]

            target, headers = signed(world, url, "POST", body, Expect="100-continue")
            posted = client.post(target, headers=headers, content=chunks())
    assert posted.status_code == 200, posted.text
    seen = posted.json()
    assert seen["body"] == body.decode() and seen["headers"]["content-length"] == str(len(body))
    assert "transfer-encoding" not in seen["headers"]
    assert len(ports) == 1, ports


@pytest.mark.slow
def test_the_proxy_answers_502_when_the_upstream_is_too_slow(world: World) -> None:
    settings = replace(SETTINGS, upstream_timeout=1)
    with (
        serve_asgi(peer_app) as upstream,
        serve_asgi(build_app(replace(settings, upstream=upstream), world.store)) as url,
    ):
        target, headers = signed_path(world, url, "/quick")
        answer = httpx.get(target, headers=headers, timeout=30)
        target, headers = signed_path(world, url, "/slow")  # peer_app takes 3 s
        started = time.monotonic()
        slow = httpx.get(target, headers=headers, timeout=30)
        waited = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert slow.status_code == 502 and slow.json()["error_code"] == "upstream_unavailable", slow.text
    assert 1 <= waited < 2.9


def signed_path(world: World, url: str, suffix: str) -> tuple[str, dict[str, str]]:
    """A signed GET of one notebook (``suffix``: its id)."""
    headers = {"X-Nonce": os.urandom(8).hex(), "Content-Type": "application/json"}
    out = sign_request("GET", f"{url}/v1/{world.project}/notebooks{suffix}", headers, b"",
                       access_key=world.scientist.access, secret_key=world.scientist.secret)  # fmt: skip
    return out.url, dict(out.headers)


def test_the_proxy_closes_the_client_connection_when_the_upstream_dies_mid_body(world: World) -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"
    with (
        scripted([cut], close_after_each=True) as (upstream, _seen),
        serve_asgi(build_app(replace(SETTINGS, upstream=upstream), world.store)) as url,
    ):
        target, headers = signed(world, url, "GET")
        with httpx.Client(timeout=30) as client, client.stream("GET", target, headers=headers) as response:
            assert response.status_code == 200  # the upstream's status had gone out
            with pytest.raises(httpx.RemoteProtocolError):  # then the connection closed, the body incomplete
                response.read()


# -- helpers -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def scripted(
    answers: list[bytes | None], *, close_after_each: bool = False
) -> Iterator[tuple[str, list[tuple[int, bytes]]]]:
    """A TCP server giving the n-th request it reads (over all connections) ``answers[n]`` (``None``: no answer,
    the connection held open); ``seen`` lists (connection number, request head) as they arrive."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    seen: list[tuple[int, bytes]] = []
    stop = threading.Event()

    def serve(conn: socket.socket, number: int) -> None:
        with conn:
            buffer = b""
            while not stop.is_set():
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                buffer = buffer[length:]
                seen.append((number, head))
                answer = answers[min(len(seen), len(answers)) - 1]
                if answer is None:
                    stop.wait(10)
                    return
                conn.sendall(answer)
                if close_after_each:
                    return

    def accept() -> None:
        number = 0
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn, number), daemon=True).start()
            number += 1

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", seen
    finally:
        stop.set()
        listener.close()


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@contextlib.contextmanager
def serve_tls(app: Any, cert: Path, key: Path) -> Iterator[str]:
    """``app`` on uvicorn over TLS with ``cert``; yields its https URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", ssl_certfile=str(cert), ssl_keyfile=str(key))
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"https://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
