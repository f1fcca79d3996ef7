"""The IAM endpoints (docs/apis.md) as an ASGI app: ``POST /v3/auth/tokens`` (password), ``GET``, ``HEAD``,
``DELETE``, and ``POST /v3.0/OS-CREDENTIAL/securitytokens`` (temporary credentials: ``assume_role`` an agency, or
``token``).

``authmw proxy`` serves it; an app can mount it. Passwords are checked with scrypt in a worker thread, each
attempt reserved first against the limits (:class:`AttemptLimiter`: per user and per client address, failures
in a sliding window, and a cap on checks in flight), and every failure gets the same answer, whether the user
is unknown, disabled or the password wrong. Temporary credentials are sealed into their security token
(:mod:`authmw.sessions`): nothing is stored per session. Every call writes one audit record
(:func:`authmw.audit.log_event`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

from authmw.admission import Receive, Scope, Send, read_body, request_from_scope, send_error, send_response
from authmw.audit import log_event
from authmw.errors import (
    ActionDenied,
    AddressNotAllowed,
    AuthenticationFailed,
    AuthmwError,
    ConfigurationError,
    InvalidDuration,
    InvalidSessionPolicy,
    LoginBusy,
    MalformedBody,
    MissingCredentials,
    NotFound,
    ProjectNotFound,
    TooManyAttempts,
    UnsignedPayloadRefused,
)
from authmw.guard import Guard
from authmw.models import AuthContext, AuthMethod, Credential, CredentialKind, Principal, Request, WhitelistScope
from authmw.sessions import DEFAULT_DURATION, MAX_DURATION, MIN_DURATION, SessionSealer
from authmw.sharedstate import Limit, LocalWindows, Windows
from authmw.store import Store
from authmw.store.records import Domain, User
from authmw.sts import ASSUME_ACTION, assume
from authmw.tokens import TokenClaims, TokenSigner, iso_time

__all__ = ["SECURITY_TOKENS_PATH", "TOKENS_PATH", "AttemptLimiter", "MintLimiter", "TokenService"]

TOKENS_PATH = "/v3/auth/tokens"
SECURITY_TOKENS_PATH = "/v3.0/OS-CREDENTIAL/securitytokens"
_MAX_BODY = 64 * 1024
#: How many limiter keys all unknown users and domains share (a bound, and no name of theirs is kept).
UNKNOWN_BUCKETS = 4096
_Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]  # status, body, headers


class Attempt:
    """One login attempt reserved by :meth:`AttemptLimiter.reserve`: it counts against its user's and address's
    limits, and holds one password-check slot, until it is settled, once (later calls do nothing)."""

    __slots__ = ("_address", "_limiter", "_settled", "_user")

    def __init__(self, limiter: AttemptLimiter, user: str, address: str | None) -> None:
        self._limiter, self._user, self._address, self._settled = limiter, user, address, False

    def failed(self) -> None:
        """The password was wrong (or the user unknown or disabled): the attempt counts as a failure."""
        self._settle(failed=True)

    def succeeded(self) -> None:
        """The password was right: the user's failures are forgotten (the address's are kept)."""
        self._settle(failed=False, forgive=True)

    def release(self) -> None:
        """Nothing was decided (the store failed): the attempt does not count."""
        self._settle(failed=False)

    def _settle(self, *, failed: bool, forgive: bool = False) -> None:
        if not self._settled:
            self._settled = True
            self._limiter._settle(self._user, self._address, failed=failed, forgive=forgive)


class AttemptLimiter:
    """Login attempts per user and per client address in a sliding window, reserved before any password work.

    :meth:`reserve` checks and counts an attempt atomically, so concurrent guesses cannot all pass the check:
    attempts in flight count as failures until settled. ``per_user`` failures of one user (key: domain id and
    user id, see :meth:`TokenService`), or ``per_address`` failures from one client address (an IPv6 address
    counts as its /64, which one client usually holds whole), within ``window`` seconds refuse further attempts
    (429 ``too_many_attempts``). The windows live in ``windows``: this process's (bounded: at most ``max_keys``
    users and as many addresses, least recently used forgotten first), or a
    :class:`~authmw.sharedstate.SharedState` several processes share, so that the limits are global. At most
    ``max_hashing`` password checks run at once in the process (each is an scrypt of 128 MiB); beyond that an
    attempt is refused at once (503 ``login_busy``), never queued. Keep one limiter for the life of the process
    (a configuration reload keeps it).
    """

    def __init__(
        self,
        *,
        per_user: int = 5,
        per_address: int = 20,
        window: float = 300.0,
        max_keys: int = 100_000,
        max_hashing: int = 4,
        clock: Callable[[], float] = time.monotonic,
        windows: Windows | None = None,
    ) -> None:
        if min(per_user, per_address, max_keys, max_hashing) < 1 or window <= 0:
            raise ConfigurationError("attempt limits, max_keys, max_hashing and window must be positive")
        self.per_user, self.per_address, self.window = per_user, per_address, window
        self.max_hashing = max_hashing
        self.windows: Windows = windows if windows is not None else LocalWindows(max_keys=2 * max_keys, clock=clock)
        self._hashing = 0
        self._lock = threading.Lock()  # attempts are settled in the worker threads that check passwords
        # Unknown users and domains share a bounded set of keys, chosen by a keyed hash nobody outside can predict;
        # the key is the windows' (so every process sharing them picks the same bucket: a limit that bound a real
        # user fleet-wide and a made-up one per process would tell them apart).

    def unknown_key(self, domain: str, name: str) -> str:
        """The key of a user that does not exist: one of :data:`UNKNOWN_BUCKETS`, so made-up names are limited
        like real ones without growing the limiter."""
        digest = hmac.new(self.windows.secret("unknown-users"), f"{domain}\0{name}".encode(), hashlib.sha256).digest()
        return f"?{int.from_bytes(digest[:4], 'big') % UNKNOWN_BUCKETS}"

    def reserve(self, user: str, address: str | None) -> Attempt:
        """Reserve an attempt of ``user`` (a canonical key) from ``address`` (None: unknown, limited per user
        only), or raise :class:`TooManyAttempts` / :class:`LoginBusy` (or
        :class:`~authmw.errors.SharedStateUnavailable`). Settle the attempt when the check ends."""
        network = _network(address)
        limits = self._limits(user, network)
        with self._lock:
            busy = self._hashing >= self.max_hashing
            if not busy:
                self._hashing += 1
        if busy:  # a locked user hears 429 rather than 503, busy or not
            wait = self.windows.waiting(limits, self.window)
            if wait:
                raise TooManyAttempts(wait)
            raise LoginBusy(1)
        try:
            wait = self.windows.reserve(limits, self.window)
        except BaseException:
            self._release()
            raise
        if wait:
            self._release()
            raise TooManyAttempts(wait)
        return Attempt(self, user, network)

    def retry_after(self, user: str, address: str | None) -> int:
        """Seconds until ``user`` from ``address`` may try again (0: now), attempts in flight included."""
        return self.windows.waiting(self._limits(user, _network(address)), self.window)

    def _limits(self, user: str, network: str | None) -> list[Limit]:
        limits = [(f"login:u:{user}", self.per_user)]
        if network is not None:
            limits.append((f"login:a:{network}", self.per_address))
        return limits

    def _release(self) -> None:
        with self._lock:
            self._hashing -= 1

    def _settle(self, user: str, network: str | None, *, failed: bool, forgive: bool) -> None:
        self._release()
        keys = [key for key, _ in self._limits(user, network)]
        self.windows.settle(keys, self.window, count=failed, forget=keys[0] if forgive else None)


class MintLimiter:
    """Security tokens obtained per caller: ``per_caller`` per ``window`` seconds for one user and for one access
    key or token, ten times that from one client address (429 ``too_many_attempts``), in ``windows`` (shared by
    several processes when they share state). Minting costs nothing but makes credentials a leaked key could
    then hold on to after it is disabled; the limit bounds how many."""

    def __init__(self, *, per_caller: int = 600, window: float = 60.0, windows: Windows | None = None) -> None:
        if per_caller < 1 or window <= 0:
            raise ConfigurationError("the security-token limit and its window must be positive")
        self.per_caller, self.window = per_caller, window
        self.windows: Windows = windows if windows is not None else LocalWindows()

    def reserve(self, user: str, access_key: str, address: str | None) -> list[str]:
        """Count one security token for the caller, or raise :class:`TooManyAttempts`; the keys to settle."""
        limits = [(f"mint:u:{user}", self.per_caller), (f"mint:k:{access_key}", self.per_caller)]
        network = _network(address)
        if network is not None:
            limits.append((f"mint:a:{network}", 10 * self.per_caller))
        wait = self.windows.reserve(limits, self.window)
        if wait:
            raise TooManyAttempts(wait)
        return [key for key, _ in limits]

    def settle(self, keys: list[str], *, minted: bool) -> None:
        """The request ended: it counts if a token was minted (a refusal costs nothing beyond its own check)."""
        self.windows.settle(keys, self.window, count=minted)


def _network(address: str | None) -> str | None:
    """The key of a client address: itself, or its /64 for IPv6 (None stays None)."""
    if address is None or ":" not in address:
        return address
    try:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    except ValueError:
        return address


class TokenService:
    """``POST /v3/auth/tokens`` → 201 with the token in ``X-Subject-Token`` and Huawei's body; ``HEAD`` checks
    the ``X-Subject-Token`` for a caller authenticated by ``X-Auth-Token`` (200, or 404 if it is not valid);
    ``GET`` also answers its body (Huawei's, as at login) to its user or an administrator of its domain;
    ``DELETE`` revokes it (204), for the same callers. Both tokens are checked by ``guard`` exactly as the
    pipeline checks them.

    ``POST /v3.0/OS-CREDENTIAL/securitytokens`` (when the guard's verifier resolves security tokens with a
    :class:`SessionSealer`) → 201 ``{"credential": {"access", "secret", "securitytoken", "expires_at"}}`` for
    a caller authenticated by ``X-Auth-Token`` or a permanent access key's signature (see :func:`assume`)."""

    def __init__(
        self,
        store: Store,
        signer: TokenSigner,
        guard: Guard,
        *,
        limiter: AttemptLimiter | None = None,
        minter: MintLimiter | None = None,
    ) -> None:
        if guard.tokens is None:
            raise ConfigurationError("the token service needs a guard that verifies tokens")
        self.store, self.signer, self.guard, self.tokens = store, signer, guard, guard.tokens
        resolver = guard.verifier.security_tokens
        self.sealer = resolver if isinstance(resolver, SessionSealer) else None
        self.limiter = limiter or AttemptLimiter()
        self.minter = minter or MintLimiter()
        self._domains: tuple[int, dict[str, Domain]] = (-1, {})  # (store revision, name or id → domain)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client")
        address = peer[0] if peer else None
        audit = _Audit(os.urandom(12).hex(), address)
        method, path = scope.get("method", ""), scope.get("path", "")
        answer: _Answer | None = None
        try:
            # The client as the pipeline sees it: behind trusted proxies, not the balancer every client shares.
            address = self.guard.proxies.client_address(address, request_from_scope(scope, b"").headers)
            audit.context = AuthContext(audit.context.request_id, address)
            if path == SECURITY_TOKENS_PATH and self.sealer is not None:
                if method != "POST":
                    await send_response(send, 405, b"", [(b"allow", b"POST")])
                    return
                body = await read_body(scope, receive, _MAX_BODY)
                if body is not None:
                    audit.event = "credentials_issued"
                    answer = await self._security_token(scope, body, audit)
            elif path != TOKENS_PATH:
                await send_response(send, 404, b"", [])
            elif method == "POST":
                body = await read_body(scope, receive, _MAX_BODY)
                if body is not None:
                    audit.event = "login"
                    answer = await self._issue(scope, body, address, audit)
            elif method in ("GET", "HEAD", "DELETE"):
                audit.event = "token_revoked" if method == "DELETE" else "token_checked"
                answer = await self._check_or_revoke(scope, audit)
            else:
                await send_response(send, 405, b"", [(b"allow", b"POST, GET, HEAD, DELETE")])
        except AuthmwError as exc:
            audit.write(exc, method, path)  # recorded before the client hears the answer
            await send_error(scope, send, exc, audit.context.request_id)
            return
        audit.write(None, method, path)
        if answer is not None:
            await send_response(send, *answer)

    async def _issue(self, scope: Scope, body: bytes, address: str | None, audit: _Audit) -> _Answer:
        name, password, domain, project = _password_request(body)
        subject = await asyncio.to_thread(self._login_subject, name, domain)
        audit.facts.update(subject.facts)
        attempt = self.limiter.reserve(subject.key, address)  # before any password work; raises 429 or 503
        try:
            checking = asyncio.get_running_loop().run_in_executor(
                None, self._check_password, attempt, name, password, domain
            )
        except BaseException:  # never started (the executor is shut down)
            attempt.release()
            raise
        # Shielded: a cancelled request must not cancel a check still queued, which would never settle its slot.
        found = await asyncio.shield(checking)
        if found is None:
            raise AuthenticationFailed("the user name, domain or password is wrong")
        token, claims = self._sign(*found, project)
        audit.facts.update(
            project_id=claims.project_id, token_id=claims.token_id, expires_at=iso_time(claims.expires_at)
        )
        query = scope.get("query_string", b"").decode("latin-1")
        payload = _token_body(claims, catalog="nocatalog" not in query)
        headers = [(b"x-subject-token", token.encode()), (b"content-type", b"application/json")]
        return 201, json.dumps(payload).encode(), headers

    async def _security_token(self, scope: Scope, body: bytes, audit: _Audit) -> _Answer:
        assert self.sealer is not None
        agency, duration, policy = _session_request(body)
        if agency is not None:
            audit.event = "agency_assumed"
            audit.facts.update(agency_domain=agency[0], agency=agency[1])
        digest = None if policy is None else hashlib.sha256(policy.encode()).hexdigest()
        audit.facts.update(duration=duration, session_policy_sha256=digest)
        request = request_from_scope(scope, body)
        credential, principal = await asyncio.to_thread(self.guard.authenticate, request)
        audit.caller(credential, principal)
        if credential.method is AuthMethod.TEMPORARY:
            raise ActionDenied("temporary credentials cannot obtain temporary credentials")
        if credential.unsigned_payload:  # the body chooses what is granted: it must be what was signed
            raise UnsignedPayloadRefused("a request for temporary credentials must sign its body")
        client = self.guard.proxies.client_address(request.client, request.headers)
        if not self.guard.identity.whitelist(WhitelistScope.USER, principal.user_id).allows(client):
            raise AddressNotAllowed("client address not in the caller's user whitelist")
        if agency is not None:
            audit.facts.update(action=ASSUME_ACTION)
        counted = self.minter.reserve(principal.user_id, credential.access_key, client)
        minted = False
        try:
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
            minted = True
        finally:
            self.minter.settle(counted, minted=minted)
        audit.facts.update(
            issued_access_key=session.access_key,
            duration=session.expires_at - session.issued_at,
            expires_at=iso_time(session.expires_at),
            delegation=list(session.chain),
        )
        if session.agency_name is not None:
            audit.facts.update(
                agency=session.agency_name,
                agency_domain=session.agency_domain_name,
                resource=f"iam::{session.agency_domain_id}:agency:{session.agency_name}",
            )
        credentials = {
            "access": session.access_key,
            "secret": session.secret_key,
            "securitytoken": token,
            "expires_at": iso_time(session.expires_at),
        }
        headers = [(b"content-type", b"application/json")]
        return 201, json.dumps({"credential": credentials}).encode(), headers

    def _login_subject(self, name: str, domain: str) -> _Subject:
        """Who a login of ``name`` in ``domain`` (a name or an id) names. The limiter's key is the domain id and
        user id, so naming the domain either way counts once; a user or domain that does not exist gets a shared
        key (and no name of it is audited: a password typed into the name field stays out of the log)."""
        revision = self.store.revision()
        if revision != self._domains[0]:
            index: dict[str, Domain] = {}
            for found in self.store.list_domains():
                index.setdefault(found.id, found)
                index.setdefault(found.name, found)
            self._domains = (revision, index)
        known = self._domains[1].get(domain)
        # The same queries whether or not the domain exists: the answer's timing must not tell.
        user_id = self.store.user_id(domain if known is None else known.name, name)
        if known is None:
            return _Subject(self.limiter.unknown_key(domain, name), {})
        if user_id is None:
            return _Subject(self.limiter.unknown_key(known.id, name), {"domain": known.name})
        return _Subject(f"{known.id}/{user_id}", {"user_id": user_id, "user_name": name, "domain": known.name})

    def _check_password(self, attempt: Attempt, name: str, password: str, domain: str) -> tuple[User, str] | None:
        """The scrypt check, in a worker thread that settles ``attempt`` itself: it runs to the end even when the
        request that asked is gone, and its slot is held until then."""
        try:
            found = self.store.check_password(name, password, domain=domain)
        except AuthmwError:  # the store failed: nothing was decided about the password
            attempt.release()
            raise
        except BaseException:
            attempt.failed()
            raise
        if found is None:
            attempt.failed()
        else:
            attempt.succeeded()
        return found

    def _sign(self, user: User, domain_name: str, project: dict[str, str] | None) -> tuple[str, TokenClaims]:
        scope: dict[str, str] = {}
        if project is not None:
            try:  # in the user's own domain only
                found = self.store.find_project(project.get("id") or project["name"], domain=domain_name)
            except NotFound:
                raise ProjectNotFound("no such project in the user's domain") from None
            scope = {"project_id": found.id, "project_name": found.name}
        holder = self.guard.identity.principal(user.id)
        return self.signer.issue(
            user_id=user.id,
            user_name=user.name,
            domain_id=user.domain_id,
            domain_name=domain_name,
            not_before=None if holder is None else holder.password_changed_at,
            **scope,
        )

    def _holder(self, token: str) -> tuple[Credential, Principal]:
        """A token's credential and user, checked as the pipeline checks ``X-Auth-Token`` (revoked, user disabled,
        password changed: refused); an external issuer's token too."""
        return self.guard.authenticate(Request.build("GET", TOKENS_PATH, {"x-auth-token": token}))

    async def _check_or_revoke(self, scope: Scope, audit: _Audit) -> _Answer:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        if "x-auth-token" not in headers:
            raise MissingCredentials("the caller's X-Auth-Token is required")
        caller, principal = await asyncio.to_thread(self._holder, headers["x-auth-token"])
        audit.caller(caller, principal)
        try:
            subject, holder = await asyncio.to_thread(self._holder, headers.get("x-subject-token", ""))
        except AuthmwError as exc:
            audit.refusal, audit.status = exc, 404
            return 404, b"", []
        audit.facts.update(subject_token_id=subject.access_key, subject_user_id=holder.user_id)
        if scope["method"] == "HEAD":
            return 200, b"", []
        if principal.user_id != holder.user_id and not (principal.is_admin and principal.domain_id == holder.domain_id):
            raise ActionDenied("only the token's user or an administrator of its domain may read or revoke it")
        if scope["method"] == "GET":
            if subject.kind is not CredentialKind.IAM_TOKEN:  # an external issuer's token: not ours to describe
                audit.status = 404
                return 404, b"", []
            claims = self.tokens.verify(headers["x-subject-token"].strip())
            query = scope.get("query_string", b"").decode("latin-1")
            payload = _token_body(claims, catalog="nocatalog" not in query)
            token_headers = [
                (b"x-subject-token", headers["x-subject-token"].encode()),
                (b"content-type", b"application/json"),
            ]
            return 200, json.dumps(payload).encode(), token_headers
        expires_at = subject.expires_at or 0
        await asyncio.to_thread(self.store.revoke_token, subject.access_key, holder.user_id, expires_at)
        return 204, b"", []


class _Subject(NamedTuple):
    key: str  # the attempt limiter's
    facts: dict[str, str]  # what the audit record may say about who was named


class _Audit:
    """The audit event of one call of the IAM endpoints, filled in as the call goes (one record per call)."""

    __slots__ = ("context", "event", "facts", "refusal", "status")

    def __init__(self, request_id: str, client: str | None) -> None:
        self.context = AuthContext(request_id, client)
        self.event: str | None = None  # None: nothing to record (a 404/405, or the client left)
        self.facts: dict[str, Any] = {}
        self.refusal: AuthmwError | None = None  # a refusal answered without raising (HEAD's 404)
        self.status: int | None = None

    def caller(self, credential: Credential, principal: Principal) -> None:
        self.context = replace(self.context, credential=credential, principal=principal)

    def write(self, error: AuthmwError | None, method: str, path: str) -> None:
        if self.event is None:
            return
        error = error or self.refusal
        event = self.event
        if event == "login" and error is not None:
            event = "login_locked" if isinstance(error, TooManyAttempts | LoginBusy) else "login_failed"
        log_event(event, self.context, error, method, path, status=self.status, **self.facts)


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
