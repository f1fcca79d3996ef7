"""The IAM endpoints (SPEC §6) as an ASGI app: ``POST /v3/auth/tokens`` (password), ``HEAD``, ``DELETE``, and
``POST /v3.0/OS-CREDENTIAL/securitytokens`` (temporary credentials: ``assume_role`` an agency, or ``token``).

``authmw proxy`` serves it; an app can mount it. Passwords are checked with scrypt in a worker thread, after
an attempt limit (per user and per client address, failures in a sliding window), and every failure gets the
same answer, whether the user is unknown, disabled or the password wrong. Temporary credentials are sealed
into their security token (:mod:`authmw.sessions`): nothing is stored per session.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from authmw.asgi import Receive, Scope, Send, read_body, request_from_scope, send_error, send_response
from authmw.errors import (
    ActionDenied,
    AddressNotAllowed,
    AgencyNotTrusted,
    AuthenticationFailed,
    AuthmwError,
    ConfigurationError,
    ExpiredToken,
    InvalidDuration,
    InvalidPolicy,
    InvalidSessionPolicy,
    MalformedBody,
    MissingCredentials,
    NotFound,
    ProjectNotFound,
    TooManyAttempts,
    UnsignedPayloadRefused,
)
from authmw.guard import Guard, bare_context
from authmw.identity import Principal, WhitelistScope
from authmw.models import AuthMethod, Credential, Request
from authmw.policy import parse_policy
from authmw.sessions import MAX_DURATION, MIN_DURATION, Session, SessionSealer, new_temporary_key
from authmw.store import Store
from authmw.store.records import User
from authmw.tokens import TokenClaims, TokenSigner, iso_time

__all__ = ["SECURITY_TOKENS_PATH", "TOKENS_PATH", "AttemptLimiter", "TokenService", "assume"]

TOKENS_PATH = "/v3/auth/tokens"
SECURITY_TOKENS_PATH = "/v3.0/OS-CREDENTIAL/securitytokens"
#: The IAM action a caller needs (besides the agency's trust) to assume an agency.
ASSUME_ACTION = "iam:agencies:assume"
DEFAULT_DURATION = 900
_MAX_BODY = 64 * 1024
_MAX_SESSION_POLICY = 2048  # characters of compact JSON: the policy travels inside every request's token


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
    ``DELETE`` revokes it (204). Both tokens are checked by ``guard`` exactly as the pipeline checks them.

    ``POST /v3.0/OS-CREDENTIAL/securitytokens`` (when the guard's verifier resolves security tokens with a
    :class:`SessionSealer`) → 201 ``{"credential": {"access", "secret", "securitytoken", "expires_at"}}`` for
    a caller authenticated by ``X-Auth-Token`` or a permanent access key's signature (see :func:`assume`)."""

    def __init__(
        self, store: Store, signer: TokenSigner, guard: Guard, *, limiter: AttemptLimiter | None = None
    ) -> None:
        if guard.tokens is None:
            raise ConfigurationError("the token service needs a guard that verifies tokens")
        self.store, self.signer, self.guard, self.tokens = store, signer, guard, guard.tokens
        resolver = guard.verifier.security_tokens
        self.sealer = resolver if isinstance(resolver, SessionSealer) else None
        self.limiter = limiter or AttemptLimiter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client")
        address = peer[0] if peer else None
        try:
            path = scope.get("path")
            if path == SECURITY_TOKENS_PATH and self.sealer is not None:
                if scope["method"] != "POST":
                    await send_response(send, 405, b"", [(b"allow", b"POST")])
                    return
                body = await read_body(scope, receive, _MAX_BODY)
                if body is not None:
                    await self._security_token(scope, send, body)
            elif path != TOKENS_PATH:
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

    async def _security_token(self, scope: Scope, send: Send, body: bytes) -> None:
        assert self.sealer is not None
        agency, duration, policy = _session_request(body)
        request = request_from_scope(scope, body)
        credential, principal = await asyncio.to_thread(self.guard.authenticate, request)
        if credential.method is AuthMethod.TEMPORARY:
            raise ActionDenied("temporary credentials cannot obtain temporary credentials")
        if credential.unsigned_payload:  # the body chooses what is granted: it must be what was signed
            raise UnsignedPayloadRefused("a request for temporary credentials must sign its body")
        client = self.guard.proxies.client_address(request.client, request.headers)
        if not self.guard.identity.whitelist(WhitelistScope.USER, principal.user_id).allows(client):
            raise AddressNotAllowed("client address not in the caller's user whitelist")
        session, token = await asyncio.to_thread(
            assume,
            self.store,
            self.sealer,
            principal,
            agency=agency,
            duration=duration,
            policy=policy,
            caller=credential,
            source_ip=client,
        )
        credentials = {
            "access": session.access_key,
            "secret": session.secret_key,
            "securitytoken": token,
            "expires_at": iso_time(session.expires_at),
        }
        headers = [(b"content-type", b"application/json")]
        await send_response(send, 201, json.dumps({"credential": credentials}).encode(), headers)

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

    def _holder(self, token: str) -> tuple[Credential, Principal]:
        """A token's credential and user, checked as the pipeline checks ``X-Auth-Token`` (revoked, user disabled,
        password changed: refused); an external issuer's token too."""
        return self.guard.authenticate(Request.build("GET", TOKENS_PATH, {"x-auth-token": token}))

    async def _check_or_revoke(self, scope: Scope, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        if "x-auth-token" not in headers:
            raise MissingCredentials("the caller's X-Auth-Token is required")
        _caller, principal = await asyncio.to_thread(self._holder, headers["x-auth-token"])
        try:
            subject, holder = await asyncio.to_thread(self._holder, headers.get("x-subject-token", ""))
        except AuthmwError:
            await send_response(send, 404, b"", [])
            return
        if scope["method"] == "HEAD":
            await send_response(send, 200, b"", [])
            return
        if principal.user_id != holder.user_id and not (principal.is_admin and principal.domain_id == holder.domain_id):
            raise ActionDenied("only the token's user or an administrator of its domain may revoke it")
        expires_at = subject.expires_at or 0
        await asyncio.to_thread(self.store.revoke_token, subject.access_key, holder.user_id, expires_at)
        await send_response(send, 204, b"", [])


def assume(
    store: Store,
    sealer: SessionSealer,
    principal: Principal,
    *,
    agency: tuple[str, str] | None = None,
    duration: int = DEFAULT_DURATION,
    policy: str | None = None,
    caller: Credential | None = None,
    source_ip: str | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[Session, str]:
    """Temporary credentials for an authenticated caller (not itself temporary): its own identity (``agency``
    None: the ``token`` method) or the agency ``(domain name or id, agency name)``, which must trust the caller's
    domain and which the caller's policies must allow it to assume (``iam:agencies:assume`` on
    ``iam::<domain_id>:agency:<name>``, with ``g:CurrentTime``, ``g:SourceIp`` and the caller's facts).

    ``duration`` (900-86400 s) is capped by the agency's maximum; ``policy`` (a policy document as JSON text, at
    most 2048 characters) narrows the session. ``caller`` is the credential the caller authenticated with: a
    session never outlives its token, keeps an IAM token's project scope, and ends when that token is revoked.
    Returns the session and its sealed security token.
    """
    if not MIN_DURATION <= duration <= MAX_DURATION:
        raise InvalidDuration(f"duration_seconds must be {MIN_DURATION}-{MAX_DURATION}")
    if policy is not None:
        _check_session_policy(policy)
    now = int(clock())
    mfa = caller is not None and caller.mfa
    acting: tuple[str | None, str | None, str | None, str | None] = (None, None, None, None)
    if agency is not None:
        domain, name = agency
        try:
            found, domain_name = store.find_agency(name, domain=domain)
        except NotFound:  # answered as an untrusted agency: a caller learns nothing about other domains
            raise AgencyNotTrusted(f"no agency {name!r} of domain {domain!r} trusts the caller") from None
        if found.trust_domain not in (principal.domain_name, principal.domain_id):
            raise AgencyNotTrusted(f"no agency {name!r} of domain {domain!r} trusts the caller")
        facts: dict[str, object] = {
            "g:currenttime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "g:userid": principal.user_id,
            "g:username": principal.user_name,
            "g:domainid": principal.domain_id,
            "g:domainname": principal.domain_name,
            "g:mfapresent": mfa,
        }
        if source_ip is not None:
            facts["g:sourceip"] = source_ip
        decision = principal.policies.decide(ASSUME_ACTION, f"iam::{found.domain_id}:agency:{found.name}", facts)
        if not decision.allowed:
            raise ActionDenied(f"{ASSUME_ACTION}: {decision.reason}")
        duration = min(duration, found.max_duration)
        acting = (found.id, found.name, found.domain_id, domain_name)
    expires_at = now + duration
    origin = caller if caller is not None and caller.method is AuthMethod.TOKEN else None  # asked with a token
    if origin is not None and origin.expires_at is not None:
        expires_at = min(expires_at, origin.expires_at)
        if expires_at <= now:  # a token inside the verifier's leeway: nothing left to give
            raise ExpiredToken("the token has expired")
    signed_with = caller.access_key if caller is not None and caller.method is AuthMethod.AKSK else None
    access, secret = new_temporary_key()
    session = Session(
        access,
        secret,
        now,
        expires_at,
        principal.user_id,
        principal.user_name,
        principal.domain_id,
        principal.domain_name,
        *acting,
        policy=policy,
        mfa=mfa,
        token_id=None if origin is None else origin.access_key,
        iam_token=origin is not None and origin.scheme == "token",
        project_id=None if origin is None else origin.project,
        access_key_id=signed_with,
    )
    return session, sealer.seal(session)


def _check_session_policy(policy: str) -> None:
    if len(policy) > _MAX_SESSION_POLICY:
        raise InvalidSessionPolicy(f"the session policy must be at most {_MAX_SESSION_POLICY} characters of JSON")
    try:
        parse_policy(policy, name="session policy")
    except InvalidPolicy as exc:
        raise InvalidSessionPolicy(str(exc)) from None
    except RecursionError:
        raise InvalidSessionPolicy("the session policy is nested too deeply") from None


def _session_request(body: bytes) -> tuple[tuple[str, str] | None, int, str | None]:
    """((agency domain, agency name) for ``assume_role``, None for ``token``; the duration; the session policy as
    compact JSON, or None)."""
    try:
        identity = json.loads(body)["auth"]["identity"]
        methods = identity["methods"]
        if methods not in (["assume_role"], ["token"]):
            raise ValueError("methods")
        method = methods[0]
        params = identity.get(method) or {}
        if not isinstance(params, dict):
            raise TypeError("parameters")
        agency: tuple[str, str] | None = None
        if method == "assume_role":
            domain = params.get("domain_name") or params.get("domain_id")
            name = params.get("agency_name") or params.get("xrole_name")
            if not (_text(domain) and _text(name)):
                raise ValueError("agency")
            agency = (str(domain), str(name))
        duration = params.get("duration_seconds", DEFAULT_DURATION)
        document = identity.get("policy")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise MalformedBody(
            'expected {"auth": {"identity": {"methods": ["assume_role"], "assume_role": {"domain_name" or '
            '"domain_id", "agency_name", "duration_seconds"}, "policy"?}}} or {"auth": {"identity": {"methods": '
            '["token"], "token": {"duration_seconds"}, "policy"?}}}'
        ) from None
    if not isinstance(duration, int) or isinstance(duration, bool):  # the range is assume()'s to check
        raise InvalidDuration(f"duration_seconds must be an integer from {MIN_DURATION} to {MAX_DURATION}")
    policy = None
    if document is not None:
        if not isinstance(document, dict):
            raise InvalidSessionPolicy("the session policy must be a policy object")
        policy = json.dumps(document, separators=(",", ":"), sort_keys=True)
    return agency, duration, policy


def _text(value: object) -> bool:
    """Non-empty text that is valid Unicode (JSON's ``\ud800`` escapes can make lone surrogates, which no store
    can hold)."""
    if not isinstance(value, str) or not value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


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
        if not all(_text(t) for t in texts) or (project is not None and not project):
            raise ValueError("fields")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
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
