"""A test OIDC issuer built with joserfc: signs tokens and serves its JWKS over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt as jose_jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OKPKey, RSAKey

ISS = "https://login.example.test/realms/main"
AUDIENCE = "authmw-api"
ALGORITHMS = ("RS256", "ES256", "EdDSA")
START = 1_800_000_000.0
JoseKey = RSAKey | ECKey | OKPKey


def _make_keys() -> dict[str, JoseKey]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # the deliberately small key below
        return {
            "rsa-1": RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig", "alg": "RS256"}),
            "rsa-2": RSAKey.generate_key(2048, parameters={"kid": "rsa-2"}),
            "ec-1": ECKey.generate_key("P-256", parameters={"kid": "ec-1", "use": "sig"}),
            "ed-1": OKPKey.generate_key("Ed25519", parameters={"kid": "ed-1"}),
            "rsa-small": RSAKey.generate_key(1024, parameters={"kid": "rsa-small"}),
            "ec-384": ECKey.generate_key("P-384", parameters={"kid": "ec-384"}),
        }


KEYS = _make_keys()
KEY_ALGORITHM = {"rsa-1": "RS256", "rsa-2": "RS256", "ec-1": "ES256", "ed-1": "EdDSA"}


class FakeClock:
    """Serves as both the wall clock and the monotonic timer; tests move it by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Issuer:
    """A test OIDC issuer: signs with joserfc keys and serves the published ones as a JWKS over HTTP."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.published = ["rsa-1", "ec-1", "ed-1"]
        self.max_age: int | None = 300
        self.status = 200
        self.document: bytes | None = None  # served instead of the key set when set
        self.drip: float | None = None  # when set, the body is sent one byte every `drip` seconds
        self.hits = 0
        self.gate = threading.Event()  # cleared: requests wait (at most 5 s) before being answered
        self.gate.set()
        self._lock = threading.Lock()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    def jwks(self) -> bytes:
        return json.dumps({"keys": [KEYS[kid].as_dict(private=False) for kid in self.published]}).encode()

    def start(self) -> None:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with issuer._lock:
                    issuer.hits += 1
                issuer.gate.wait(5)
                body = issuer.document if issuer.document is not None else issuer.jwks()
                self.send_response(issuer.status)
                self.send_header("Content-Type", "application/json")
                if issuer.max_age is not None:
                    self.send_header("Cache-Control", f"public, max-age={issuer.max_age}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                drip = issuer.drip  # read once: a test may reset it while this answer is still dripping
                if drip is None:
                    self.wfile.write(body)
                    return
                try:
                    for index in range(len(body)):
                        self.wfile.write(body[index : index + 1])
                        time.sleep(drip)
                except OSError:
                    pass  # the client gave up

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)  # the same port again on restart
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    def token(self, kid: str = "rsa-1", *, header: dict[str, Any] | None = None, **claims: Any) -> str:
        now = int(self.clock())
        payload = {
            "iss": ISS,
            "sub": "f81d4fae-7dec",
            "aud": [AUDIENCE, "other"],
            "preferred_username": "alice",
            "iat": now,
            "exp": now + 3600,
            "jti": "token-1",
        }
        payload.update(claims)
        payload = {name: value for name, value in payload.items() if value is not None}
        # "rsa-1/other-kid" signs with rsa-1 but names other-kid in the header.
        signer, _, named = kid.partition("/")
        protected = {"alg": KEY_ALGORITHM[signer], "kid": named or signer, **(header or {})}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SecurityWarning)  # joserfc discourages EdDSA (RFC 9864)
            return jose_jwt.encode(protected, payload, KEYS[signer], algorithms=[protected["alg"]])
