"""Raw HTTP/1.1 on a socket, for the tests whose malformed requests must really reach the server
(tests/pipeline/test_bad_input.py and the proxy tests built on it): requests as bytes, their signed and
presigned builders, and the reading of an answer."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from cryptography.hazmat.primitives.asymmetric import ed25519

from authmw.signing import presign_url, sign_request
from authmw.tokens import TokenSigner
from tests.support.world import Key, World

NB = "/v1/{p}/notebooks"  # GET: modelarts:notebook:list, allowed for the scientist
NB1 = "/v1/{p}/notebooks/nb-1"
JOBS = "/v2/{p}/training-jobs"  # POST: modelarts:trainJob:create, allowed for the scientist
JOB1 = "/v2/{p}/training-jobs/job-1"  # DELETE: explicitly denied for the scientist
SERVICE = "/v1/{p}/services/svc-1"  # PUT: body field "status" picks modelarts:service:action
HEX64 = "0123456789abcdef" * 4


# -- raw requests ---------------------------------------------------------------------------------------------


@dataclass
class Raw:
    """One HTTP/1.1 request as bytes on the wire. ``framing`` replaces the body (chunked or truncated bodies)."""

    method: str
    target: str
    headers: list[tuple[str, str | bytes]]
    body: bytes = b""
    framing: bytes | None = None
    content_length: str | None = None
    version: str = "HTTP/1.1"
    half_close: bool = False  # end the client's side of the connection once the request is sent

    def get(self, name: str) -> str:
        return next(str(v) for n, v in self.headers if n.lower() == name.lower())

    def set(self, name: str, value: str | bytes) -> Raw:
        """Replace every header ``name`` (any case) by one with ``value``, in the first one's place."""
        at = next((i for i, (n, _v) in enumerate(self.headers) if n.lower() == name.lower()), len(self.headers))
        self.drop(name)
        self.headers.insert(at, (name, value))
        return self

    def add(self, name: str, value: str | bytes) -> Raw:
        self.headers.append((name, value))
        return self

    def drop(self, name: str) -> Raw:
        self.headers = [(n, v) for n, v in self.headers if n.lower() != name.lower()]
        return self

    def pipe(self, edit: Callable[[Raw], Raw]) -> Raw:
        """``edit(self)``: lets a case change a request it has just built, in one expression."""
        return edit(self)

    def chunked(self, chunks: list[bytes]) -> Raw:
        self.framing = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        return self.add("Transfer-Encoding", "chunked")

    def encode(self) -> bytes:
        lines = [f"{self.method} {self.target} {self.version}".encode("latin-1")]
        for name, value in self.headers:
            lines.append(name.encode("utf-8") + b": " + (value if isinstance(value, bytes) else value.encode()))
        payload = self.body if self.framing is None else self.framing
        if self.content_length is not None:
            lines.append(b"Content-Length: " + self.content_length.encode())
        elif self.framing is None and (self.body or self.method in ("POST", "PUT", "PATCH")):
            lines.append(b"Content-Length: %d" % len(self.body))
        lines.append(b"Connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n" + payload


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(address: tuple[str, int], data: bytes, *, half_close: bool = False) -> Reply:
    """Send ``data`` and read the final response (the request says ``Connection: close``; a ``100 Continue``
    is skipped)."""
    received = b""
    with socket.create_connection(address, timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # answered before reading it all
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        while not _final(received)[2]:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    head, body, _complete = _final(received)
    if not head:  # the connection closed without an answer
        assert not received, f"not an HTTP response: {received[:200]!r}"
        return Reply(0, {}, b"")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return Reply(int(status_line.split(" ")[1]), headers, body)


def _final(received: bytes) -> tuple[bytes, bytes, bool]:
    """The final response's head and body so far, and whether its body is complete by its Content-Length."""
    while True:
        head, found, rest = received.partition(b"\r\n\r\n")
        if not found:
            return b"", b"", False
        if not re.match(rb"HTTP/1\.[01] 1\d\d ", head):
            break
        received = rest  # an interim response (100 Continue)
    match = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    return head, rest, match is not None and len(rest) >= int(match.group(1))


# -- building requests ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ctx:
    """What a case needs to build its request: the world and the server it goes to."""

    world: World
    host: str

    def path(self, template: str, project: str | None = None) -> str:
        return template.replace("{p}", self.world.project if project is None else project)


def signed(
    c: Ctx,
    method: str = "GET",
    path: str = NB,
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
    body: bytes | None = b"",
    who: str | Key = "scientist",
    project: str | None = None,
    at: float | None = None,
    security_token: str | None = None,
) -> Raw:
    """A correctly signed SDK-HMAC-SHA256 request (as huaweicloudsdkcore sends it), to be corrupted.

    ``body=None`` signs a streamed body (``UNSIGNED-PAYLOAD``) and leaves the body to the caller. A signed nonce
    makes each one unique: two cases may build the same request within one second, and the second would be
    refused as a replay instead of showing the defence it tests."""
    key = c.world.key(who) if isinstance(who, str) else who
    url = f"http://{c.host}{c.path(path, project)}" + (f"?{query}" if query else "")
    headers = {"X-Nonce": os.urandom(8).hex(), **(headers or {})}
    request = sign_request(
        method, url, headers, body, access_key=key.access, secret_key=key.secret, at=at,
        security_token=security_token,
    )  # fmt: skip
    split = urlsplit(request.url)
    target = split.path + (f"?{split.query}" if split.query else "")
    return Raw(method, target, list(request.headers.items()), request.body)


_UNSET: Any = object()


def token(
    c: Ctx, *, project: Any = _UNSET, age: int = 0, alg_none: bool = False, foreign: bool = False, tamper: bool = False
) -> str:
    """An IAM token of the scientist, signed with the store's key (or forged as asked)."""
    kid, key = c.world.store.signing_key()
    if foreign:
        key = ed25519.Ed25519PrivateKey.generate()
    signer = TokenSigner(kid, key, clock=lambda: time.time() - age)
    scope = c.world.project if project is _UNSET else project
    principal = c.world.store.find_user("scientist")
    issued, _ = signer.issue(
        user_id=principal.id, user_name="scientist", domain_id=principal.domain_id, domain_name="default",
        **({} if scope is None else {"project_id": scope, "project_name": "cn-north-4"}),
    )  # fmt: skip
    head, payload, signature = issued.split(".")
    if alg_none:
        none = base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": kid}).encode()).rstrip(b"=").decode()
        return f"{none}.{payload}."
    if tamper:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        claims["sub"] = c.world.store.find_user("admin").id
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{payload}.{signature}"


def presigned(
    c: Ctx,
    path: str = NB,
    *,
    edit: Callable[[list[list[str]]], None] | None = None,
    at: float | None = None,
    expires: int = 300,
    who: str | Key = "scientist",
) -> Raw:
    """A SigV4 presigned GET; ``edit`` changes its decoded query fields ``[[name, value], ...]`` in place."""
    key = c.world.key(who) if isinstance(who, str) else who
    url = presign_url(
        "GET", f"http://{c.host}{c.path(path)}", access_key=key.access, secret_key=key.secret,
        region="cn-north-4", service="modelarts", expires=expires, at=at,
    )  # fmt: skip
    split = urlsplit(url)
    query = split.query
    if edit is not None:
        fields = [[unquote(k), unquote(v)] for k, _, v in (item.partition("=") for item in query.split("&"))]
        edit(fields)
        query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in fields)
    return Raw("GET", f"{split.path}?{query}", [("Host", c.host)])


# -- the proxy's slow-client tests ----------------------------------------------------------------------------


def head_of(host: str, key: Key, size: int, path: str) -> bytes:
    """The head of a signed POST announcing ``size`` bytes of (unsigned) body."""
    signed_request = sign_request(
        "POST", f"http://{host}{path}", {}, None, access_key=key.access, secret_key=key.secret, unsigned_payload=True
    )
    lines = [f"POST {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in signed_request.headers.items()]
    lines.append(f"Content-Length: {size}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(sock: socket.socket, timeout: float) -> tuple[int, bytes]:
    """The status and head of the response on ``sock`` (0 if none came within ``timeout``)."""
    sock.settimeout(timeout)
    received = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    if not received.startswith(b"HTTP/1.1 "):
        return 0, received
    return int(received[9:12]), received
