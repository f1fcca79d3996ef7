"""A service that knows nothing about authmw: plain ``http.server``, it trusts the ``X-Authmw-*`` headers the
sidecar sets (and strips from callers), so it must only be reachable through the sidecar.

Run: ``python adapters/sidecar/upstream.py [PORT]`` (listens on 127.0.0.1:9000 by default).
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    """Answers every request with who the sidecar said the caller is."""

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        facts = {
            "user": self.headers.get("X-Authmw-User-Name"),
            "user_id": self.headers.get("X-Authmw-User-Id"),
            "workspace": self.headers.get("X-Authmw-Workspace-Id"),
            "auth_method": self.headers.get("X-Authmw-Auth-Method"),
            "action": self.headers.get("X-Authmw-Action"),
            "request_id": self.headers.get("X-Authmw-Request-Id"),
            "method": self.command,
            "path": self.path,
        }
        body = json.dumps(facts).encode()
        self.send_response(201 if self.command == "POST" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"upstream: {format % args}\n")


def make_server(port: int = 9000) -> ThreadingHTTPServer:
    """The upstream on 127.0.0.1 only: the sidecar is its one client."""
    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


if __name__ == "__main__":
    server = make_server(int(sys.argv[1]) if len(sys.argv) > 1 else 9000)
    print(f"upstream on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
