"""A service that knows nothing about signatures or policies: plain ``http.server`` behind the sidecar.

It learns who is calling from ``X-Authmw-Assertion`` only: the assertion is verified against the sidecar's
public keys (``/.well-known/jwks.json``, fetched once), must be bound to this very request (method, raw path,
raw query) and addressed to this service (its audience: the sidecar's ``assertion_audience``, by default the
origin of its ``--upstream``, here ``http://127.0.0.1:PORT``), and is accepted once (each ``jti`` is remembered
until ``exp``). The plain ``X-Authmw-*`` headers are never read: on a network the sidecar does not own, anyone could
send them.

Run: ``python adapters/sidecar/upstream.py [PORT [SIDECAR_URL [AUDIENCE]]]`` (127.0.0.1:9000, sidecar
http://127.0.0.1:8080, audience http://127.0.0.1:PORT).
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from authmw.assertion import InvalidAssertion, UsedAssertions, keys_from_jwks, verify_assertion


class Upstream(ThreadingHTTPServer):
    """The server, with the sidecar whose assertions it trusts."""

    def __init__(self, port: int, sidecar: str, audience: str | None = None) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.sidecar = sidecar
        self.audience = audience or f"http://127.0.0.1:{self.server_address[1]}"
        self._keys: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._used = UsedAssertions()  # thread-safe: requests are answered on threads of their own

    def claims(self, assertion: str, method: str, target: str) -> dict[str, Any]:
        """The verified claims of ``assertion`` for this request (raises :class:`InvalidAssertion`)."""
        path, _, query = target.partition("?")
        with self._lock:
            if not self._keys:
                self._keys.update(keys_from_jwks(httpx.get(self.sidecar + "/.well-known/jwks.json").json()))
        claims = verify_assertion(assertion, self._keys, method=method, path=path, query=query, audience=self.audience)
        self._used.use(claims)
        return claims


class Handler(BaseHTTPRequestHandler):
    """Answers every request with who the sidecar's assertion says the caller is."""

    server: Upstream

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            claims = self.server.claims(self.headers.get("X-Authmw-Assertion", ""), self.command, self.path)
        except InvalidAssertion as exc:
            self._send(401, {"error": f"assertion refused: {exc}"})
            return
        facts = {
            "user": claims.get("user-name"),
            "user_id": claims.get("user-id"),
            "workspace": claims.get("workspace-id"),
            "auth_method": claims.get("auth-method"),
            "action": claims.get("action"),
            "request_id": claims.get("jti"),
            "method": self.command,
            "path": self.path,
        }
        self._send(201 if self.command == "POST" else 200, facts)

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"upstream: {format % args}\n")


def make_server(port: int = 9000, sidecar: str = "http://127.0.0.1:8080", audience: str | None = None) -> Upstream:
    """The upstream on 127.0.0.1, trusting the assertions of ``sidecar`` addressed to ``audience``."""
    return Upstream(port, sidecar, audience)


if __name__ == "__main__":
    server = make_server(*(int(sys.argv[1]),) if len(sys.argv) > 1 else (), *sys.argv[2:4])
    print(f"upstream on http://127.0.0.1:{server.server_address[1]} trusting {server.sidecar}", flush=True)
    server.serve_forever()
