"""The sidecar as an ASGI app: check each request with the guard, then stream it to the upstream.

Every incoming ``X-Authmw-*`` header is dropped and the documented identity headers (docs/deployment.md) are added,
with the signed ``X-Authmw-Assertion`` (bound to the method, path, query and request id the upstream receives). The
caller's credentials (``Authorization``, ``X-Auth-Token``, ``X-Security-Token``, ``X-Amz-Security-Token``, and a
presigned URL's ``X-Amz-Signature`` / ``X-Amz-Security-Token`` query parameters) are not forwarded unless
``forward_credentials``: an upstream's logs or a less trusted app could otherwise replay them at the sidecar.
Header names containing ``_`` are dropped (as nginx does), since WSGI servers fold ``X_Authmw_Agency`` onto
``X-Authmw-Agency``; kept with ``drop_underscore_headers=False``, one that folds onto a protected or present name
is still dropped. What the caller wrote about the connection (``X-Forwarded-Host``, ``X-Forwarded-Proto``,
``X-Real-IP``, ``True-Client-IP``, ``X-Client-IP``, and the forwarding chain the deployment does not read) is
dropped; the proxy sends its own forwarding chain, ``X-Forwarded-Host`` and ``X-Forwarded-Proto``. The request
body is read once (the signature check needs it) and sent on as is; the upstream's response is streamed back
without buffering. ``/healthz``, ``/readyz``, ``/metrics`` and
``/.well-known/jwks.json`` are answered by the proxy itself, and, with a ``workspace_service``, the ModelArts
workspace routes the guard admitted (:mod:`authmw.workspace_api`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from cryptography.hazmat.primitives.asymmetric import ed25519

from authmw.admission import (
    CREDENTIAL_HEADERS,
    DEFAULT_BODY_TIMEOUT,
    PROTECTED_HEADERS,
    ASGIApp,
    BodyBudget,
    Message,
    Receive,
    Scope,
    Send,
    admit,
    raw_target,
    send_error,
    send_response,
)
from authmw.assertion import jwk_of, sign_assertion
from authmw.audit import log_decision
from authmw.errors import AuthmwError, StoreUnavailable, UpstreamUnavailable
from authmw.guard import Guard, bare_context
from authmw.iam_admin import is_iam_path
from authmw.models import AuthContext
from authmw.proxy.upstream import UpstreamClient, UpstreamLimits
from authmw.tokens import PublicKey
from authmw.workspace_api import WorkspaceService

__all__ = [
    "ProxyApp",
    "UpstreamLimits",
    "asserted_identity",
    "forwarded_query",
    "identity_headers",
    "origin_of",
    "upstream_headers",
]

logger = logging.getLogger("authmw.proxy")

_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"host",
    }
)
#: The caller's credentials: not forwarded unless ``forward_credentials``.
_CREDENTIALS = CREDENTIAL_HEADERS
#: A header whose name folds onto one of these (``_`` → ``-``, as WSGI servers fold them) is never forwarded.
_PROTECTED = PROTECTED_HEADERS | _HOP_BY_HOP
#: The client-address chains: only the one ``forwarded_header`` names goes upstream, with this hop appended (an
#: upstream reading the other would believe whatever the client wrote there).
_FORWARDING = frozenset({b"forwarded", b"x-forwarded-for"})
#: What the proxy states about the connection: the caller's are never forwarded (a framework taking the first
#: ``X-Forwarded-Proto``/``-Host`` or any ``X-Real-IP`` would believe the client); the proxy sets its own
#: forwarding chain, ``X-Forwarded-Host`` and ``X-Forwarded-Proto``.
_SET_BY_PROXY = _FORWARDING | frozenset(
    {b"x-forwarded-host", b"x-forwarded-proto", b"x-real-ip", b"true-client-ip", b"x-client-ip"}
)
#: A presigned URL's query parameters that make it usable (the rest only describe it).
_PRESIGNED_SECRETS = frozenset({"x-amz-signature", "x-amz-security-token"})
_WS_HANDSHAKE = frozenset({b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions"})
#: The caller's headers that never go upstream as sent, over HTTP and on a websocket's handshake: filtered in one
#: pass (the identity headers added after them are the proxy's own ``X-Authmw-*``).
_NOT_FORWARDED = _HOP_BY_HOP | _SET_BY_PROXY
_NOT_FORWARDED_WS = _NOT_FORWARDED | _WS_HANDSHAKE
#: The upstream's response headers the client does not get: the hop-by-hop ones (its own server frames the
#: response), but the length, which it keeps (a HEAD's answer states the length of the body it would have had).
_HOP_BY_HOP_RESPONSE = _HOP_BY_HOP - {b"content-length"}
_HEALTH = b'{"status":"ok"}'
_JSON = [(b"content-type", b"application/json")]
_WAITING = b'{"status":"waiting for the store"}'
_STORE_DOWN = b'{"status":"store unavailable"}'


def identity_headers(context: AuthContext, *, allowed_actions: bool = True) -> list[tuple[str, str]]:
    """The documented ``X-Authmw-*`` facts of a checked request (without the assertion; without the allowed actions
    when not ``allowed_actions``)."""
    principal = context.principal
    headers = [("x-authmw-request-id", context.request_id)]
    if principal is None:
        return headers
    headers += [
        ("x-authmw-user-id", principal.user_id),
        ("x-authmw-user-name", principal.user_name),
        ("x-authmw-domain-id", principal.domain_id),
    ]
    if context.project is not None:
        headers.append(("x-authmw-project-id", context.project.id))
    if context.workspace is not None:
        headers.append(("x-authmw-workspace-id", context.workspace.id))
    if context.action is not None:
        headers.append(("x-authmw-action", context.action))
    if context.auth_method is not None:
        headers.append(("x-authmw-auth-method", context.auth_method.value))
    agency = context.agency
    if agency is not None:  # the principal is the agency; the delegation chain says who asked
        headers.append(("x-authmw-agency", agency))
    if allowed_actions:
        headers.append(("x-authmw-allowed-actions", ",".join(context.allowed_actions)))
    return headers


def asserted_identity(
    context: AuthContext,
    signing_key: tuple[str, ed25519.Ed25519PrivateKey],
    *,
    method: str,
    path: str,
    query: str,
    ttl: int,
    audience: str | None,
    allowed_actions: bool = True,
) -> list[tuple[str, str]]:
    """The identity headers of a checked request and the ``X-Authmw-Assertion`` stating them, bound to the
    ``method``, raw ``path`` and raw ``query`` the upstream receives (the sidecar and Envoy's ``authz`` alike).
    The allowed actions, when sent, are not in the assertion (the upstream can decide one with the facts)."""
    facts = identity_headers(context, allowed_actions=allowed_actions)
    claims = {name[len("x-authmw-") :]: value for name, value in facts if name != "x-authmw-allowed-actions"}
    kid, key = signing_key
    assertion = sign_assertion(
        claims, key, kid, method=method, path=path, query=query, request_id=context.request_id, ttl=ttl,
        audience=audience,
    )  # fmt: skip
    facts.append(("x-authmw-assertion", assertion))
    return facts


def upstream_headers(
    headers: Iterable[tuple[bytes, bytes]],
    skip: frozenset[bytes],
    *,
    forward_credentials: bool = False,
    drop_underscore_headers: bool = True,
) -> list[tuple[bytes, bytes]]:
    """The caller's headers that may go upstream: no ``skip`` names, no ``X-Authmw-*``, no credentials (unless
    ``forward_credentials``), no names with ``_`` (unless kept; even then none that folds onto a protected name or
    onto another header of the request, which a WSGI server would merge with it)."""
    headers = list(headers)
    folds: dict[bytes, set[bytes]] = {}
    if not drop_underscore_headers:  # which names a WSGI server would merge: only needed when "_" names are kept
        for name, _value in headers:
            lowered = name.lower()
            folds.setdefault(lowered.replace(b"_", b"-"), set()).add(lowered)
    kept = []
    for name, value in headers:
        lowered = name.lower()
        if lowered in skip or lowered.startswith(b"x-authmw-"):
            continue
        if not forward_credentials and lowered in _CREDENTIALS:
            continue
        if b"_" in lowered:
            folded = lowered.replace(b"_", b"-")
            if drop_underscore_headers or folded.startswith(b"x-authmw-") or folded in _PROTECTED:
                continue
            if len(folds[folded]) > 1:  # X_Foo beside X-Foo: a WSGI app would see one merged value
                continue
        kept.append((name, value))
    return kept


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower-cased: the default audience of the assertions sent there."""
    split = urlsplit(url)
    return f"{split.scheme}://{split.netloc}".lower()


def _forwarded_for(address: str) -> str:
    """An RFC 7239 ``for=`` element (IPv6 quoted and bracketed)."""
    return f'for="[{address}]"' if ":" in address else f"for={address}"


def forwarded_query(query: str, *, forward_credentials: bool = False) -> str:
    """The raw query sent upstream: a presigned URL loses what makes it usable (``X-Amz-Signature``,
    ``X-Amz-Security-Token``) unless ``forward_credentials``; every other byte is kept as sent."""
    if forward_credentials or ("-" not in query and "%" not in query):
        return query
    items = query.split("&")
    kept = [item for item in items if unquote_plus(item.partition("=")[0]).lower() not in _PRESIGNED_SECRETS]
    return query if len(kept) == len(items) else "&".join(kept)


class ProxyApp:
    """The sidecar ASGI app. ``guard`` may be replaced at any time (:meth:`reload`); requests in flight keep
    the guard they started with. Assertions are addressed to ``assertion_audience`` (default: the origin of
    ``upstream``). ``forward_credentials`` sends the caller's credentials upstream (for upstreams
    that verify them again); ``drop_underscore_headers=False`` keeps header names with ``_`` that fold onto no
    protected or present name. A request body must arrive within ``body_timeout`` seconds (408), and the bodies
    held at once stay within ``body_budget`` (503). Without a ``guard`` (nor a signing key: a proxy started
    while its store is down) every request is refused with 503 ``store_unavailable`` and ``/readyz`` says so,
    until :meth:`reload` gives it one."""

    def __init__(
        self,
        *,
        guard: Guard | None,
        upstream: str,
        signing_key: tuple[str, ed25519.Ed25519PrivateKey] | None,
        public_keys: Mapping[str, PublicKey],
        assertion_ttl: int = 60,
        assertion_audience: str | None = None,
        client: UpstreamClient | None = None,
        token_service: ASGIApp | None = None,
        workspace_service: WorkspaceService | None = None,
        forward_credentials: bool = False,
        drop_underscore_headers: bool = True,
        allowed_actions_header: bool = True,
        body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
        body_budget: BodyBudget | None = None,
        limits: UpstreamLimits | None = None,
    ) -> None:
        from authmw.proxy.metrics import Metrics

        if not upstream.startswith(("http://", "https://")):
            raise ValueError("the upstream must be an http:// or https:// URL")
        self.guard = guard
        self.upstream = upstream.rstrip("/")
        self.kid: str = ""
        self._key: ed25519.Ed25519PrivateKey | None = None
        self.limits = limits or UpstreamLimits()
        self.set_keys(signing_key, public_keys)
        self.assertion_ttl = assertion_ttl
        self.assertion_audience = assertion_audience or origin_of(self.upstream)
        self.forward_credentials = forward_credentials
        self.drop_underscore_headers = drop_underscore_headers
        self.allowed_actions_header = allowed_actions_header
        self.body_timeout = body_timeout
        self.body_budget = BodyBudget() if body_budget is None else body_budget
        self.metrics = Metrics()
        self._client = client
        self.token_service = token_service
        self.workspace_service = workspace_service
        self.draining = False

    def set_keys(
        self, signing_key: tuple[str, ed25519.Ed25519PrivateKey] | None, public_keys: Mapping[str, PublicKey]
    ) -> None:
        """Sign assertions with ``signing_key`` and publish ``public_keys`` from now on (a rotation)."""
        self.kid, self._key = signing_key or ("", None)
        self._jwks_body = json.dumps({"keys": [jwk_of(k, v) for k, v in public_keys.items()]}).encode()

    def reload(self, fresh: ProxyApp) -> None:
        """Serve new requests with ``fresh``'s guard, signing key, key set and token service (a configuration
        reload); requests in flight finish with the old ones, and the upstream pools are kept."""
        self.guard, self.kid, self._key = fresh.guard, fresh.kid, fresh._key
        self.workspace_service = fresh.workspace_service
        self._jwks_body, self.assertion_ttl, self.token_service = (
            fresh._jwks_body,
            fresh.assertion_ttl,
            fresh.token_service,
        )
        self.forward_credentials, self.drop_underscore_headers = (
            fresh.forward_credentials,
            fresh.drop_underscore_headers,
        )
        self.assertion_audience, self.allowed_actions_header = fresh.assertion_audience, fresh.allowed_actions_header
        self.limits = fresh.limits  # its timeouts; the pools, once open, keep their sizes

    @property
    def client(self) -> UpstreamClient:
        """The keep-alive pools to the upstream (:mod:`authmw.proxy.upstream`): a client without a cookie jar, so
        one user's cookies never go upstream with another user's request."""
        if self._client is None:
            self._client = self._open_client()
        return self._client

    def _open_client(self) -> UpstreamClient:
        # Built at startup, off the event loop (see _lifespan): an https upstream's TLS context loads the CA bundle
        # (~50 ms of CPU), once for all the connections.
        return UpstreamClient(self.upstream, self.limits)

    async def aclose(self) -> None:
        identity: Any = None if self.guard is None else self.guard.identity
        if hasattr(identity, "flush_key_use"):  # the keys' uses noted since the last batch, off the event loop
            await asyncio.to_thread(identity.flush_key_use)
        if self._client is not None:
            await self._client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            own = _OWN_PATHS.get(scope["path"])
            if own is not None and scope["method"] in ("GET", "HEAD"):
                await own(self, send)
            elif self.guard is None:
                await self._waiting(scope, receive, send)
            elif self.token_service is not None and is_iam_path(scope["path"]):
                await self.token_service(scope, receive, send)
            else:
                await self._http(scope, receive, send)
        elif kind == "websocket":
            if self.guard is None:
                await self._waiting(scope, receive, send)
            else:
                await self._websocket(scope, receive, send)

    async def _waiting(self, scope: Scope, receive: Receive, send: Send) -> None:
        """No guard yet (the store has not answered since the start): refused, never let through."""
        if scope["type"] == "websocket" and (await receive())["type"] != "websocket.connect":
            return
        peer = scope.get("client")
        context = bare_context(peer[0] if peer else None)
        self.metrics.decided("deny", StoreUnavailable.code, 0.0)
        await send_error(scope, send, StoreUnavailable("waiting for the store since the start"), context.request_id)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self._client is None:
                    self._client = await asyncio.to_thread(self._open_client)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.draining = True
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- the proxy's own endpoints -------------------------------------------------------------------------

    async def _healthz(self, send: Send) -> None:
        await send_response(send, 200, _HEALTH, _JSON)

    async def _readyz(self, send: Send) -> None:
        """Ready when the store answers (within its deadline, off the event loop) and the proxy is not stopping."""
        if self.guard is None:
            await send_response(send, 503, _WAITING, _JSON)
            return
        identity: Any = self.guard.identity
        try:
            if hasattr(identity, "available"):
                available = await asyncio.to_thread(identity.available)
            else:
                available = True
        except AuthmwError:
            available = False
        if not available:
            await send_response(send, 503, _STORE_DOWN, _JSON)
            return
        if self.draining:
            await send_response(send, 503, b'{"status":"shutting down"}', _JSON)
            return
        await send_response(send, 200, _HEALTH, _JSON)

    async def _metrics(self, send: Send) -> None:
        await send_response(send, 200, self.metrics.render(), [(b"content-type", self.metrics.content_type.encode())])

    async def _jwks(self, send: Send) -> None:
        if self.guard is None:  # no key set read yet: an empty one would make verifiers drop what they cached
            await send_response(send, 503, _WAITING, _JSON)
            return
        await send_response(send, 200, self._jwks_body, _JSON)

    # -- the pipeline ----------------------------------------------------------------------------------

    async def _check(self, scope: Scope, receive: Receive, send: Send) -> tuple[AuthContext, bytes] | None:
        assert self.guard is not None  # requests reach the pipeline only with a guard
        return await admit(
            self.guard,
            scope,
            receive,
            send,
            self.metrics.observer(),
            body_timeout=self.body_timeout,
            budget=self.body_budget,
            audit_admitted=False,  # audited by _audited, with how the upstream answered
        )

    @contextlib.contextmanager
    def _audited(self, scope: Scope, context: AuthContext) -> Iterator[_Audit]:
        """The audit record of an admitted request: written once the upstream answered (its status) or failed
        (502), before the client hears it; or, if neither happened, when forwarding ended some other way."""
        audit = _Audit(context, scope.get("method", "GET"), scope.get("path", ""))
        try:
            yield audit
        finally:
            audit.write()

    def _target(self, scope: Scope) -> tuple[str, str]:
        """The raw path and query the upstream receives."""
        query = scope.get("query_string", b"").decode("latin-1")
        return raw_target(scope)[0], forwarded_query(query, forward_credentials=self.forward_credentials)

    def _forward_headers(self, scope: Scope, context: AuthContext, skip: frozenset[bytes]) -> list[tuple[bytes, bytes]]:
        """What goes upstream: the caller's headers but ``skip`` (which holds :data:`_SET_BY_PROXY`) and what
        :func:`upstream_headers` drops, the identity headers and their assertion, the forwarding headers."""
        assert self.guard is not None and self._key is not None  # admitted: the proxy has its guard and key
        headers = upstream_headers(
            scope.get("headers", ()),
            skip,
            forward_credentials=self.forward_credentials,
            drop_underscore_headers=self.drop_underscore_headers,
        )
        path, query = self._target(scope)
        facts = asserted_identity(
            context,
            (self.kid, self._key),
            method=scope.get("method", "GET"),
            path=path,
            query=query,
            ttl=self.assertion_ttl,
            audience=self.assertion_audience,
            allowed_actions=self.allowed_actions_header,
        )
        headers += [(name.encode(), value.encode()) for name, value in facts]
        chain = self.guard.proxies.header.encode()  # the one the deployment reads; the other never goes upstream
        hops, hosts = [], []
        for name, value in scope.get("headers", ()):
            lowered = name.lower()
            if lowered == chain:
                hops.append(value.decode("latin-1"))
            elif lowered == b"host":
                hosts.append((b"x-forwarded-host", value))
        peer = scope.get("client")  # appended as proxies do: the chain stays what each hop saw
        if peer:
            hops.append(_forwarded_for(peer[0]) if chain == b"forwarded" else peer[0])
        if hops:
            headers.append((chain, ", ".join(hops).encode("latin-1")))
        headers += hosts
        headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
        return headers

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        checked = await self._check(scope, receive, send)
        if checked is None:
            return
        context, body = checked
        try:
            with self._audited(scope, context) as audit:
                if self.workspace_service is not None and self.workspace_service.serves(context):
                    await self._answer_here(scope, send, context, body, audit)
                else:
                    await self._forward(scope, send, context, body, audit)
        finally:
            self.body_budget.give(len(body))

    async def _answer_here(self, scope: Scope, send: Send, context: AuthContext, body: bytes, audit: _Audit) -> None:
        """Answer an admitted request with the workspace service (handed its context and body), not the upstream."""
        assert self.workspace_service is not None
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def audited_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                audit.write(status=message["status"])  # before the client hears it
            await send(message)

        await self.workspace_service({**scope, "authmw": context}, replay, audited_send)

    async def _forward(self, scope: Scope, send: Send, context: AuthContext, body: bytes, audit: _Audit) -> None:
        path, query = self._target(scope)
        headers = self._forward_headers(scope, context, _NOT_FORWARDED)
        try:
            response = await self.client.request(
                scope["method"], path + (f"?{query}" if query else ""), headers, body, self.limits
            )
        except UpstreamUnavailable as failure:  # nothing sent to the client yet: a 502 it can retry
            self.metrics.upstream_errors.inc()
            logger.warning("upstream request failed (request %s): %s", context.request_id, failure.detail)
            audit.write(failure=failure)
            await send_error(scope, send, failure, context.request_id)
            return
        audit.write(status=response.status)
        try:
            headers = [(k, v) for k, v in response.headers if k.lower() not in _HOP_BY_HOP_RESPONSE]
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
            done = False
            while not done:  # streamed as it arrives; a body that came whole goes in one message
                chunk, done = await response.receive()
                await send({"type": "http.response.body", "body": chunk, "more_body": not done})
        except (UpstreamUnavailable, OSError) as exc:
            # The upstream (or the client) went away mid-response: the client's connection is closed by its
            # server, as the response cannot be completed (its status is in the audit record already).
            self.metrics.upstream_errors.inc()
            detail = exc.detail if isinstance(exc, UpstreamUnavailable) else type(exc).__name__
            logger.info("response stream ended early: %s", detail)
        finally:
            response.release()  # back to the pool if read to its end, else closed

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        checked = await self._check(scope, receive, send)
        if checked is None:
            return
        context = checked[0]
        with self._audited(scope, context) as audit:
            await self._tunnel(scope, receive, send, context, audit)

    async def _tunnel(self, scope: Scope, receive: Receive, send: Send, context: AuthContext, audit: _Audit) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

        message = await receive()
        if message["type"] != "websocket.connect":
            return
        path, query = self._target(scope)
        url = "ws" + self.upstream[4:] + path + (f"?{query}" if query else "")
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in self._forward_headers(scope, context, _NOT_FORWARDED_WS)
            if k.lower() != b"sec-websocket-protocol"
        ]
        try:
            upstream = await connect(url, additional_headers=headers, subprotocols=scope.get("subprotocols") or None)
        except (InvalidStatus, InvalidHandshake, OSError) as exc:
            self.metrics.upstream_errors.inc()
            failure = UpstreamUnavailable(type(exc).__name__)
            logger.warning("upstream websocket failed (request %s): %s", context.request_id, failure.detail)
            audit.write(failure=failure)
            await send({"type": "websocket.close", "code": 1011})
            return
        audit.write(status=101)
        async with upstream:
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})

            async def client_to_upstream() -> None:
                while True:
                    incoming = await receive()
                    if incoming["type"] == "websocket.disconnect":
                        await upstream.close()
                        return
                    data = incoming.get("bytes")
                    await upstream.send(data if data is not None else incoming.get("text", ""))

            async def upstream_to_client() -> None:
                try:
                    async for data in upstream:
                        key = "bytes" if isinstance(data, bytes) else "text"
                        await send({"type": "websocket.send", key: data})
                except ConnectionClosed:
                    pass
                with contextlib.suppress(Exception):
                    await send({"type": "websocket.close", "code": upstream.close_code or 1000})

            tasks = [asyncio.ensure_future(client_to_upstream()), asyncio.ensure_future(upstream_to_client())]
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in done:
                with contextlib.suppress(Exception):
                    task.result()


class _Audit:
    """Writes one admitted request's audit record, once (:func:`~authmw.audit.log_decision`)."""

    __slots__ = ("_context", "_method", "_path", "_written")

    def __init__(self, context: AuthContext, method: str, path: str) -> None:
        self._context, self._method, self._path = context, method, path
        self._written = False

    def write(self, *, status: int | None = None, failure: AuthmwError | None = None) -> None:
        if not self._written:
            self._written = True
            log_decision(self._context, None, self._method, self._path, status=status, failure=failure)


_OWN_PATHS = {
    "/healthz": ProxyApp._healthz,
    "/readyz": ProxyApp._readyz,
    "/metrics": ProxyApp._metrics,
    "/.well-known/jwks.json": ProxyApp._jwks,
}
