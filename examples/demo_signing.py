"""authmw demo: a tiny HTTP service guarded by authmw's signature verifier, called by signed clients.

Runs on the embedded defaults with nothing to configure: a stdlib HTTP server on 127.0.0.1 verifies every
request with :class:`authmw.signing.Verifier`; an ``httpx`` client signs with each scheme in turn, then sends
a tampered, a stale and an unsigned request to show the refusals (status, stable error code).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from authmw.client import HttpxAuth
from authmw.errors import AuthmwError
from authmw.models import Request
from authmw.signing import SCHEMES, ReplayGuard, Verifier

ACCESS_KEY = "DEMOAK00000000000001"
SECRET_KEY = "demo-secret-0123456789abcdefghijklmnopqrst"
VERIFIER = Verifier(keys={ACCESS_KEY: SECRET_KEY}, replay_guard=ReplayGuard(capacity=10_000))


class Handler(BaseHTTPRequestHandler):
    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = Request.build(self.command, self.path, list(self.headers.items()), body, self.client_address[0])
        try:
            credential = VERIFIER.verify(request)
        except AuthmwError as exc:
            self._reply(exc.status, exc.to_dict(request_id="demo"), exc.headers)
            return
        self._reply(200, {"access_key": credential.access_key, "scheme": credential.scheme}, {})

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def _reply(self, status: int, payload: dict[str, str], headers: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {**headers, "Content-Type": "application/json"}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"authmw demo service on {base}\n")
    scoped = {"region": "cn-north-4", "service": "modelarts"}
    try:
        for scheme in sorted(name for name, impl in SCHEMES.items() if not impl.presigned):
            options = scoped if scheme in ("V11-HMAC-SHA256", "AWS4-HMAC-SHA256") else {}
            auth = HttpxAuth(ACCESS_KEY, SECRET_KEY, scheme=scheme, **options)
            response = httpx.post(f"{base}/v2/project/training-jobs?limit=10", json={"name": "job"}, auth=auth)
            print(f"{scheme:24} -> {response.status_code} {response.json()}")

        print()
        auth = HttpxAuth(ACCESS_KEY, SECRET_KEY)
        signed = httpx.Client(auth=auth).build_request("POST", f"{base}/v2/p/jobs", json={"lr": 0.1})
        next(auth.auth_flow(signed))
        tampered = httpx.post(str(signed.url), headers=signed.headers, content=signed.content.replace(b"0.1", b"9.9"))
        print(f"{'tampered body':24} -> {tampered.status_code} {tampered.json()['error_code']}")
        first = httpx.post(str(signed.url), headers=signed.headers, content=signed.content)
        print(f"{'original request':24} -> {first.status_code} {first.json()}")
        replayed = httpx.post(str(signed.url), headers=signed.headers, content=signed.content)
        print(f"{'same request again':24} -> {replayed.status_code} {replayed.json()['error_code']}")
        stale = HttpxAuth(ACCESS_KEY, SECRET_KEY, clock=lambda: time.time() - 3600)
        response = httpx.get(f"{base}/v2/p/jobs", auth=stale)
        print(f"{'signed an hour ago':24} -> {response.status_code} {response.json()['error_code']}")
        wrong = HttpxAuth(ACCESS_KEY, "not-the-secret")
        response = httpx.get(f"{base}/v2/p/jobs", auth=wrong)
        print(f"{'wrong secret':24} -> {response.status_code} {response.json()['error_code']}")
        response = httpx.get(f"{base}/v2/p/jobs")
        print(f"{'no signature':24} -> {response.status_code} {response.json()['error_code']}")
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
