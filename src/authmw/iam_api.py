"""The IAM token endpoints (SPEC §6) as an ASGI app: ``POST /v3/auth/tokens`` (password), ``HEAD``, ``DELETE``.

``authmw proxy`` serves it; an app can mount it. Passwords are checked with scrypt in a worker thread, after
an attempt limit (per user and per client address, failures in a sliding window), and every failure gets the
same answer, whether the user is unknown, disabled or the password wrong.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from authmw.asgi import Receive, Scope, Send, read_body, send_error, send_response
from authmw.errors import (
    ActionDenied,
    AuthenticationFailed,
    AuthmwError,
    ConfigurationError,
    MalformedBody,
    MissingCredentials,
    NotFound,
    ProjectNotFound,
    TooManyAttempts,
)
from authmw.guard import Guard, bare_context
from authmw.identity import Principal
from authmw.models import Request
from authmw.store import Store
from authmw.store.records import User
from authmw.tokens import TokenClaims, TokenSigner, iso_time

__all__ = ["TOKENS_PATH", "AttemptLimiter", "TokenService"]

TOKENS_PATH = "/v3/auth/tokens"
_MAX_BODY = 64 * 1024


class AttemptLimiter:
    """Failed logins per key in a sliding window; a key over its limit is refused before any password work.

    ``per_user`` failures of one user name, or ``per_address`` failures from one client address, within
    ``window`` seconds lock that user or address until old failures leave the window. Bounded: at most
    ``max_keys`` keys are tracked (the oldest forgotten first).
    """

    def __init__(
        self,
        *,
        per_user: int = 5,
        per_address: int = 20,
        window: float = 300.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_user, self.per_address, self.window, self._clock = per_user, per_address, window, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._max_keys = max_keys

    def retry_after(self, user: str, address: str | None) -> int:
        """Seconds until ``user`` from ``address`` may try again (0: now)."""
        now = self._clock()
        waits = [self._wait(f"u:{user}", self.per_user, now)]
        if address is not None:
            waits.append(self._wait(f"a:{address}", self.per_address, now))
        return max(waits)

    def failed(self, user: str, address: str | None) -> None:
        now = self._clock()
        for key in (f"u:{user}", *((f"a:{address}",) if address is not None else ())):
            failures = self._failures.get(key)
            if failures is None:
                if len(self._failures) >= self._max_keys:
                    self._failures.popitem(last=False)
                failures = self._failures[key] = deque(maxlen=max(self.per_user, self.per_address))
            failures.append(now)

    def succeeded(self, user: str) -> None:
        self._failures.pop(f"u:{user}", None)

    def _wait(self, key: str, limit: int, now: float) -> int:
        failures = self._failures.get(key)
        if failures is None:
            return 0
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if len(failures) < limit:
            return 0
        return max(1, math.ceil(failures[-limit] + self.window - now))


class TokenService:
    """``POST /v3/auth/tokens`` → 201 with the token in ``X-Subject-Token`` and Huawei's body; ``HEAD`` checks
    the ``X-Subject-Token`` for a caller authenticated by ``X-Auth-Token`` (200, or 404 if it is not valid);
    ``DELETE`` revokes it (204). Both tokens are checked by ``guard`` exactly as the pipeline checks them."""

    def __init__(
        self, store: Store, signer: TokenSigner, guard: Guard, *, limiter: AttemptLimiter | None = None
    ) -> None:
        if guard.tokens is None:
            raise ConfigurationError("the token service needs a guard that verifies tokens")
        self.store, self.signer, self.guard, self.tokens = store, signer, guard, guard.tokens
        self.limiter = limiter or AttemptLimiter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client")
        address = peer[0] if peer else None
        try:
            if scope.get("path") != TOKENS_PATH:
                await send_response(send, 404, b"", [])
            elif scope["method"] == "POST":
                body = await read_body(scope, receive, _MAX_BODY)
                if body is not None:
                    await self._issue(scope, send, body, address)
            elif scope["method"] in ("HEAD", "DELETE"):
                await self._check_or_revoke(scope, send)
            else:
                await send_response(send, 405, b"", [(b"allow", b"POST, HEAD, DELETE")])
        except AuthmwError as exc:
            await send_error(scope, send, exc, bare_context(address).request_id)

    async def _issue(self, scope: Scope, send: Send, body: bytes, address: str | None) -> None:
        name, password, domain, project = _password_request(body)
        limited = f"{domain}\0{name}"
        wait = self.limiter.retry_after(limited, address)
        if wait:
            raise TooManyAttempts(wait)
        found = await asyncio.to_thread(self.store.check_password, name, password, domain=domain)
        if found is None:
            self.limiter.failed(limited, address)
            raise AuthenticationFailed("the user name, domain or password is wrong")
        self.limiter.succeeded(limited)
        token, claims = self._sign(*found, project)
        query = scope.get("query_string", b"").decode("latin-1")
        payload = _token_body(claims, catalog="nocatalog" not in query)
        headers = [(b"x-subject-token", token.encode()), (b"content-type", b"application/json")]
        await send_response(send, 201, json.dumps(payload).encode(), headers)

    def _sign(self, user: User, domain_name: str, project: dict[str, str] | None) -> tuple[str, TokenClaims]:
        scope: dict[str, str] = {}
        if project is not None:
            try:  # in the user's own domain only
                found = self.store.find_project(project.get("id") or project["name"], domain=domain_name)
            except NotFound:
                raise ProjectNotFound("no such project in the user's domain") from None
            scope = {"project_id": found.id, "project_name": found.name}
        return self.signer.issue(
            user_id=user.id, user_name=user.name, domain_id=user.domain_id, domain_name=domain_name, **scope
        )

    def _holder(self, token: str) -> tuple[TokenClaims, Principal]:
        """A token's claims and user, checked as the pipeline checks ``X-Auth-Token`` (revoked, user disabled,
        password changed: refused)."""
        _credential, principal = self.guard.authenticate(Request.build("GET", TOKENS_PATH, {"x-auth-token": token}))
        return self.tokens.verify(token), principal  # remembered by the verifier: no second decode

    async def _check_or_revoke(self, scope: Scope, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        if "x-auth-token" not in headers:
            raise MissingCredentials("the caller's X-Auth-Token is required")
        _caller, principal = await asyncio.to_thread(self._holder, headers["x-auth-token"])
        try:
            subject, _holder = await asyncio.to_thread(self._holder, headers.get("x-subject-token", ""))
        except AuthmwError:
            await send_response(send, 404, b"", [])
            return
        if scope["method"] == "HEAD":
            await send_response(send, 200, b"", [])
            return
        if principal.user_id != subject.user_id and not (
            principal.is_admin and principal.domain_id == subject.domain_id
        ):
            raise ActionDenied("only the token's user or an administrator of its domain may revoke it")
        await asyncio.to_thread(self.store.revoke_token, subject.token_id, subject.user_id, subject.expires_at)
        await send_response(send, 204, b"", [])


def _password_request(body: bytes) -> tuple[str, str, str, dict[str, str] | None]:
    """(user name, password, domain name or id, project scope or None) from Huawei's request body."""
    try:
        auth = json.loads(body)["auth"]
        identity = auth["identity"]
        if identity["methods"] != ["password"]:
            raise ValueError("methods")
        user = identity["password"]["user"]
        name, password, domain = user["name"], user["password"], user["domain"]
        domain_key = domain.get("name") or domain.get("id")
        project = (auth.get("scope") or {}).get("project")
        texts = [name, password, domain_key, *((project or {}).values())]
        if not all(isinstance(t, str) and t for t in texts) or (project is not None and not project):
            raise ValueError("fields")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise MalformedBody(
            'expected {"auth": {"identity": {"methods": ["password"], "password": {"user": {"name", "password", '
            '"domain": {"name"}}}}, "scope": {"project": {"id" or "name"}}}}'
        ) from None
    return name, password, domain_key, project


def _token_body(claims: TokenClaims, *, catalog: bool) -> dict[str, Any]:
    domain = {"id": claims.domain_id, "name": claims.domain_name}
    token: dict[str, Any] = {
        "expires_at": iso_time(claims.expires_at),
        "issued_at": iso_time(claims.issued_at),
        "methods": list(claims.methods),
        "user": {"id": claims.user_id, "name": claims.user_name, "domain": domain, "password_expires_at": ""},
        "roles": [],
    }
    if claims.project_id is not None:
        token["project"] = {"id": claims.project_id, "name": claims.project_name, "domain": domain}
    else:
        token["domain"] = domain
    if catalog:
        token["catalog"] = []
    return {"token": token}
