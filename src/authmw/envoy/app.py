"""Envoy's HTTP external authorization as an ASGI app: the decision, without the forwarding.

Envoy's ``ext_authz`` filter sends each request's method, headers and body here, its path and query behind
:data:`CHECK_PREFIX` (the filter's ``path_prefix``). The prefix comes off and the rest goes through the same
:func:`~authmw.admission.admit` as the middleware and the sidecar: allowed → 200 with the ``X-Authmw-*`` identity
headers and the signed ``X-Authmw-Assertion`` (bound to the method, path and query the upstream receives: Envoy
forwards them unchanged) for Envoy to set upstream, and ``x-envoy-auth-headers-to-remove`` naming the caller's
credentials (unless ``forward_credentials``); refused → the documented status and JSON error, which Envoy passes to
the client. The client address is the one the trusted-proxy rules find in the ``X-Forwarded-For`` Envoy appends
to, Envoy being the peer (so Envoy's address belongs in ``trusted_proxies``). ``/healthz``, ``/readyz``,
``/.well-known/jwks.json``, ``/metrics`` (decisions by outcome and code, decision latency, reloads, lost audit
records) and the token endpoints (which Envoy routes here) are served as by the sidecar.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from authmw.admission import (
    CREDENTIAL_HEADERS,
    DEFAULT_BODY_TIMEOUT,
    ASGIApp,
    BodyBudget,
    Receive,
    Scope,
    Send,
    admit,
    raw_target,
    send_error,
    send_response,
)
from authmw.assertion import jwk_of
from authmw.audit import log_decision
from authmw.errors import AuthmwError, Forbidden
from authmw.guard import Guard, bare_context
from authmw.iam_api import SECURITY_TOKENS_PATH, TOKENS_PATH
from authmw.proxy.app import asserted_identity
from authmw.proxy.metrics import Metrics
from authmw.tokens import PublicKey

__all__ = ["CHECK_PREFIX", "AuthzApp"]

#: Envoy's ``path_prefix``: a check request's path is this followed by the original path (and query).
CHECK_PREFIX = "/ext_authz"
_PREFIX_BYTES = CHECK_PREFIX.encode()
_HEALTH = b'{"status":"ok"}'
_OWN = frozenset({"/healthz", "/readyz", "/.well-known/jwks.json", "/metrics"})
_JSON = [(b"content-type", b"application/json")]
#: What Envoy should not send upstream, by the ``x-envoy-auth-headers-to-remove`` of an allowed check.
_REMOVE_CREDENTIALS = (b"x-envoy-auth-headers-to-remove", b", ".join(sorted(CREDENTIAL_HEADERS)))
#: An allowed check's answer is headers only: its framing and the names of the identity headers, encoded once.
_EMPTY = (b"content-length", b"0")
_NO_BODY = {"type": "http.response.body", "body": b""}
_NAMES = {
    f"x-authmw-{name}": f"x-authmw-{name}".encode()
    for name in (
        *("request-id", "user-id", "user-name", "domain-id", "project-id", "workspace-id", "action", "auth-method"),
        *("agency", "allowed-actions", "assertion"),
    )
}


class AuthzApp:
    """The ``authz`` ASGI app. Assertions are addressed to ``assertion_audience`` (the upstream's origin; none
    when None). ``forward_credentials`` lets the caller's credentials go upstream. A check's body must arrive
    within ``body_timeout`` seconds (408), and the bodies held at once stay within ``body_budget`` (503)."""

    def __init__(
        self,
        *,
        guard: Guard,
        signing_key: tuple[str, ed25519.Ed25519PrivateKey],
        public_keys: Mapping[str, PublicKey],
        assertion_ttl: int = 60,
        assertion_audience: str | None = None,
        token_service: ASGIApp | None = None,
        forward_credentials: bool = False,
        allowed_actions_header: bool = True,
        body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
        body_budget: BodyBudget | None = None,
    ) -> None:
        self.guard = guard
        self.signing_key = signing_key
        self._jwks_body = json.dumps({"keys": [jwk_of(k, v) for k, v in public_keys.items()]}).encode()
        self.assertion_ttl = assertion_ttl
        self.assertion_audience = assertion_audience
        self.token_service = token_service
        self._allowed_extra = [_EMPTY] if forward_credentials else [_REMOVE_CREDENTIALS, _EMPTY]
        self.allowed_actions_header = allowed_actions_header
        self.body_timeout = body_timeout
        self.body_budget = BodyBudget() if body_budget is None else body_budget
        self.metrics = Metrics()
        self.draining = False

    def reload(self, fresh: AuthzApp) -> None:
        """Decide new checks with ``fresh``'s guard, keys and token service (a configuration reload); checks in
        flight finish with the old ones."""
        self.guard, self.signing_key, self._jwks_body = fresh.guard, fresh.signing_key, fresh._jwks_body
        self.assertion_ttl, self.assertion_audience = fresh.assertion_ttl, fresh.assertion_audience
        self.token_service, self._allowed_extra = fresh.token_service, fresh._allowed_extra
        self.allowed_actions_header = fresh.allowed_actions_header
        self.body_timeout = fresh.body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":  # Envoy checks a websocket handshake as the HTTP request it is
            return
        path = scope["path"]
        if path.startswith(CHECK_PREFIX + "/"):
            await self._check(scope, receive, send)
        elif path in (TOKENS_PATH, SECURITY_TOKENS_PATH):
            if self.token_service is not None:
                await self.token_service(scope, receive, send)
            else:
                await self._refuse(scope, send, "no token service (token issuing is not configured)")
        elif path in _OWN and scope["method"] in ("GET", "HEAD"):
            await self._own(path, send)
        else:  # a check without the prefix (an Envoy configured without path_prefix): refused, fail closed
            await self._refuse(scope, send, f"not a check request: its path must start with {CHECK_PREFIX}/")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.draining = True
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _own(self, path: str, send: Send) -> None:
        if path == "/metrics":
            await send_response(
                send, 200, self.metrics.render(), [(b"content-type", self.metrics.content_type.encode())]
            )
            return
        if path == "/.well-known/jwks.json":
            await send_response(send, 200, self._jwks_body, _JSON)
            return
        if path == "/readyz":
            identity: Any = self.guard.identity
            try:
                if hasattr(identity, "poll"):
                    identity.poll()
            except AuthmwError:
                await send_response(send, 503, b'{"status":"store unavailable"}', _JSON)
                return
            if self.draining:
                await send_response(send, 503, b'{"status":"shutting down"}', _JSON)
                return
        await send_response(send, 200, _HEALTH, _JSON)

    async def _refuse(self, scope: Scope, send: Send, detail: str) -> None:
        peer = scope.get("client")
        context, error = bare_context(peer[0] if peer else None), Forbidden(detail)
        log_decision(context, error, scope.get("method", "GET"), scope.get("path", ""))
        await send_error(scope, send, error, context.request_id)

    async def _check(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The original request as the app will see it: the prefix off the raw path and the decoded one.
        raw = scope.get("raw_path") or b""
        if not raw.startswith(_PREFIX_BYTES + b"/"):  # the decoded path had it, the raw one not: not Envoy's
            await self._refuse(scope, send, f"not a check request: its path must start with {CHECK_PREFIX}/")
            return
        original = {**scope, "path": scope["path"][len(CHECK_PREFIX) :], "raw_path": raw[len(_PREFIX_BYTES) :]}
        checked = await admit(
            self.guard,
            original,
            receive,
            send,
            self.metrics.observer(),
            body_timeout=self.body_timeout,
            budget=self.body_budget,
        )
        if checked is None:
            return
        context, body = checked
        self.body_budget.give(len(body))  # nothing is forwarded from here: Envoy holds the body
        path, _, query = raw_target(original)[1].partition("?")
        facts = asserted_identity(
            context,
            self.signing_key,
            method=original["method"],
            path=path,
            query=query,
            ttl=self.assertion_ttl,
            audience=self.assertion_audience,
            allowed_actions=self.allowed_actions_header,
        )
        headers = [(_NAMES.get(name) or name.encode(), value.encode("latin-1")) for name, value in facts]
        headers += self._allowed_extra
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(_NO_BODY)
