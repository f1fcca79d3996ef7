"""A small ModelArts-like API that knows nothing of signatures or policies: it trusts the sidecar.

It reads who is calling from the claims of ``X-Authmw-Assertion`` only, verified with the sidecar's public keys
from ``/.well-known/jwks.json``, bound to this very request (method, raw path, raw query), addressed to this API
(``DEMO_AUDIENCE``: the sidecar's ``assertion_audience``, by default the origin of its ``--upstream``) and
accepted once (each ``jti`` is remembered until ``exp``): the network between the sidecar and it might not be
trusted, so the plain ``X-Authmw-*`` headers are never read. Plain ASGI: serve it with
``uvicorn examples.demo_api:app``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from authmw.assertion import InvalidAssertion, UsedAssertions, keys_from_jwks, verify_assertion

SIDECAR = os.environ.get("DEMO_SIDECAR", "http://127.0.0.1:8080")
AUDIENCE = os.environ.get("DEMO_AUDIENCE", "http://127.0.0.1:9000")
_keys: dict[str, Any] = {}
_used = UsedAssertions()


def _verified(scope: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    if not _keys:
        _keys.update(keys_from_jwks(httpx.get(SIDECAR + "/.well-known/jwks.json").json()))
    path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    query = scope.get("query_string", b"").decode("latin-1")
    assertion = headers.get("x-authmw-assertion", "")
    claims = verify_assertion(assertion, _keys, method=scope["method"], path=path, query=query, audience=AUDIENCE)
    _used.use(claims)
    return claims


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    try:
        claims = _verified(scope, headers)
        status, payload = (
            200,
            {
                "seen_by_api": {
                    "user": claims.get("user-name"),
                    "workspace": claims.get("workspace-id"),
                    "action": claims.get("action"),
                    "auth_method": claims.get("auth-method"),
                    "agency": claims.get("agency"),
                    "request_id": claims.get("jti"),
                }
            },
        )
    except InvalidAssertion as exc:
        status, payload = 401, {"error": f"assertion refused: {exc}"}
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
