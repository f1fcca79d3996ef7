"""The request pipeline (docs/access-model.md): client address → route → credential → workspace → whitelists → policy.

:meth:`Guard.check` runs it over one :class:`~authmw.models.Request` and returns an :class:`AuthContext`, or
raises the :class:`~authmw.errors.AuthmwError` leaf of the first step that failed (the partial context rides
on the error as ``error.context``, for the audit log). In ``dry-run`` mode nothing is raised: the context
carries the error enforce mode would have raised, and the request goes on.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import replace
from typing import Any

from authmw.cache import BoundedCache
from authmw.clientaddr import FORWARDED_HEADERS, TrustedProxies
from authmw.errors import (
    ActionDenied,
    AddressNotAllowed,
    AuthenticationFailed,
    AuthmwError,
    ConfigurationError,
    ConflictingProject,
    InvalidSecurityToken,
    InvalidToken,
    MissingCredentials,
    MultipleCredentials,
    ProjectNotFound,
    RouteNotAllowed,
    SchemeDisabled,
    TokenScopeMismatch,
    UnsignedPayloadRefused,
)
from authmw.identity import IdentitySource, policy_facts
from authmw.models import (
    AuthContext,
    AuthMethod,
    Credential,
    CredentialKind,
    Principal,
    Project,
    Request,
    Session,
    WhitelistScope,
    Workspace,
    _new_context,
)
from authmw.oidc import TrustedIssuer, peek_issuer
from authmw.policy import Decision, PolicySet, modelarts_actions
from authmw.routes import (
    Access,
    Match,
    Route,
    RouteCatalog,
    Unmatched,
    check_allowed,
    modelarts_routes,
    parse_path,
)
from authmw.signing import Verifier
from authmw.tokens import TokenVerifier, iso_time
from authmw.workspaces import body_actions, body_workspace_ids, parse_body, picks_action, resolve_workspace

__all__ = ["MODES", "SIGNED_IF_PRESENT", "Guard", "bare_context"]

#: The guard's modes: ``dry-run`` logs what ``enforce`` would refuse and lets the request through.
MODES = ("enforce", "dry-run")
#: Headers the pipeline reads to place a request: a signature must cover them whenever they are sent.
SIGNED_IF_PRESENT = ("x-workspace-id", "x-project-id")
_Routed = tuple[Match | None, Access, str | None]  # the route match, what it demands, its resource
_EXTERNAL = "oidc"  # the scheme label of an external issuer's token (checks read Credential.kind)


_ROUTE, _USER, _WORKSPACE = WhitelistScope.ROUTE, WhitelistScope.USER, WhitelistScope.WORKSPACE
# Enum members as module globals: reading one off its class costs ten times a global's (the hot path reads several).
_PUBLIC, _AUTHENTICATE_ONLY, _TOKEN = Access.PUBLIC, Access.AUTHENTICATE_ONLY, AuthMethod.TOKEN
_SIGNATURE, _EXTERNAL_TOKEN = CredentialKind.SIGNATURE, CredentialKind.EXTERNAL_TOKEN
_EVERY_SCOPE = frozenset(WhitelistScope)


def _every_scope() -> frozenset[WhitelistScope]:
    return _EVERY_SCOPE


def bare_context(client: str | None) -> AuthContext:
    """A context for a request refused before the pipeline ran (say, a body too large to read)."""
    return AuthContext(os.urandom(12).hex(), client)


class _Clock:
    """``g:CurrentTime`` as ISO 8601, formatted once per second."""

    __slots__ = ("_clock", "_second", "_text")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._second = -1
        self._text = ""

    def now(self) -> str:
        second = int(self._clock())
        if second != self._second:
            self._text = iso_time(second, micros=False)
            self._second = second
        return self._text


class Guard:
    """Authenticates, places and authorizes requests; the one object the adapters call.

    Safe defaults: every route not in the catalog is denied (``unmatched="deny"``), no proxy is trusted, paths
    are read strictly, ``enforce`` mode, IAM default-deny (the ModelArts legacy "no policy means everything"
    rule only with ``default_allow_without_policies=True``). With no routes given, the built-in ``modelarts``
    preset applies. IAM tokens (``X-Auth-Token``) are accepted only with a ``tokens`` verifier, and tokens of
    external issuers only from the ``issuers`` given (each names users of one domain of the store).
    """

    def __init__(
        self,
        *,
        identity: IdentitySource,
        verifier: Verifier | None = None,
        tokens: TokenVerifier | None = None,
        issuers: Iterable[TrustedIssuer] = (),
        routes: RouteCatalog | Iterable[Route] | None = None,
        unmatched: Unmatched | str | None = None,
        actions: Iterable[str] = (),
        trusted_proxies: Iterable[str] = (),
        forwarded_header: str = "x-forwarded-for",
        mode: str = "enforce",
        strict_paths: bool = True,
        default_allow_without_policies: bool = False,
        max_json_body: int = 1024 * 1024,
        key_used: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        request_id: Callable[[], str] = lambda: os.urandom(12).hex(),
    ) -> None:
        if mode not in MODES:
            raise ConfigurationError(f"mode must be one of {', '.join(MODES)}")
        if isinstance(routes, RouteCatalog):
            if unmatched is not None and Unmatched(unmatched) is not routes.unmatched:
                raise ConfigurationError("unmatched is the catalog's: set it on the RouteCatalog")
            self.routes = routes
        else:
            if routes is None:
                routes, actions = modelarts_routes(), (*actions, *modelarts_actions())
            self.routes = RouteCatalog(routes, unmatched=unmatched or Unmatched.DENY)
        #: What ``allowed_actions`` is computed over: the routes' actions and any others given.
        self.actions = tuple(sorted({*self.routes.actions, *actions}))
        self.identity = identity
        self.tokens = tokens
        self.issuers = {trusted.issuer: trusted for trusted in issuers}
        self.verifier = verifier or Verifier(keys=identity, clock=clock, signed_if_present=SIGNED_IF_PRESENT)
        if not set(SIGNED_IF_PRESENT) <= set(self.verifier.signed_if_present):
            # Fail closed: these headers place the request, so an unsigned one could move it elsewhere.
            raise ConfigurationError(f"the guard's verifier must have signed_if_present={SIGNED_IF_PRESENT}")
        if forwarded_header not in FORWARDED_HEADERS:  # the configuration picks it, never the client
            raise ConfigurationError(f"forwarded_header must be one of {', '.join(FORWARDED_HEADERS)}")
        try:
            self.proxies = TrustedProxies(trusted_proxies, header=forwarded_header)
        except ValueError as exc:
            raise ConfigurationError(f"trusted_proxies: {exc}") from None
        self.mode = mode
        self.strict_paths = strict_paths
        self.default_allow_without_policies = default_allow_without_policies
        #: The largest body parsed to find a workspace or a body action (larger ones: 413, fail closed).
        self.max_json_body = max_json_body
        #: Told the permanent access key of every request it authenticates (e.g. to record its last use): it
        #: must be cheap and must not raise (the store's cache only notes it; a batch is written later).
        self.key_used = key_used
        self._now = _Clock(clock).now
        self._request_id = request_id
        # The whitelist scopes the store has any whitelist of (a store that cannot tell: every scope is looked up).
        listed = getattr(identity, "whitelist_scopes", None)
        self._listed: Callable[[], Container[WhitelistScope]] = listed if callable(listed) else _every_scope
        self._routed: BoundedCache[tuple[str, str], _Routed] = BoundedCache(10_000)
        # (policy-set version, session set version, legacy rule, facts read) → the allowed actions of the catalog.
        self._allowed: BoundedCache[tuple[Any, ...], tuple[str, ...]] = BoundedCache(10_000)

    @property
    def max_body(self) -> int:
        """The largest body the pipeline reads (larger ones are refused with 413 before they are read)."""
        return self.verifier.max_body

    # -- public verbs ----------------------------------------------------------------------------------

    def check(self, request: Request) -> AuthContext:
        """Run the whole pipeline; return the context or raise the first step's error (dry-run: never)."""
        state = _State(self._request_id(), self.proxies.client_address(request.client, request.headers))
        try:
            self._run(request, state)
        except AuthmwError as exc:
            context = state.context(self, exc if self.mode == "dry-run" else None)
            if self.mode == "dry-run":
                return context
            exc.context = context
            raise
        return state.context(self, None)

    def precheck(self, request: Request) -> None:
        """Refuse, before the body is read, what the request line and headers decide alone: the route, its IP
        whitelist, and (unless the route is public) the credential's scheme, time and key or token — so an
        unauthenticated client cannot make the adapter buffer its body. :meth:`check` runs every step again.
        Raises as :meth:`check` does (``error.context`` set); dry-run mode: never raises."""
        state = _State(self._request_id(), self.proxies.client_address(request.client, request.headers))
        try:
            match, access, state.resource = self._route(request.method, request.path)
            if match is not None:
                state.route, state.action = match.route, match.route.action
            self._whitelist(_ROUTE, state, *(() if match is None else (match.route.name, state.action)))
            if access is _PUBLIC:
                return
            token = request.headers.get("x-auth-token")
            if token is None:
                self.verifier.precheck(request)
            elif self.verifier.scheme_of(request) is not None:
                raise MultipleCredentials("both X-Auth-Token and a signature")
            elif (trusted := self.issuers.get(peek_issuer(token.strip()) or "")) is not None:
                trusted.verifier.precheck(token.strip())  # the keys at hand only: check() decides an unknown kid
            else:
                if self.tokens is None:
                    raise SchemeDisabled("IAM tokens are not enabled on this guard")
                self.tokens.verify(token.strip())
        except AuthmwError as exc:
            if self.mode == "dry-run":
                return
            exc.context = state.context(self, None)
            raise

    def authenticate(self, request: Request) -> tuple[Credential, Principal]:
        """Verify the request's one credential and load its principal (no route, workspace or policy)."""
        credential = self._credential(request)
        if credential.session is not None:
            return credential, self._session_principal(credential.session)
        principal = self.identity.principal(credential.owner or "")
        if principal is None:  # the user was disabled after its key was read (or the token issued)
            raise AuthenticationFailed("the credential's user is unknown or disabled")
        if credential.method is _TOKEN:
            self._check_token_holder(credential, principal)
        elif self.key_used is not None and credential.kind is _SIGNATURE:
            self.key_used(credential.access_key)
        return credential, principal

    def authorize(self, context: AuthContext, action: str, resource: str | None = None) -> Decision:
        """Decide ``action`` for an already checked request, in its workspace (raises :class:`ActionDenied`, with
        the context narrowed to ``action`` and its decision as ``error.context``, as :meth:`check` does)."""
        if context.principal is None:
            raise MissingCredentials("the request is not authenticated")
        decision = self._decide(context.principal, action, resource, context.policy_context, context.credential)
        if not decision.allowed:
            denied = ActionDenied(f"{action}: {decision.reason}")
            denied.context = replace(context, action=action, resource=resource, decision=decision)
            raise denied
        return decision

    # -- the pipeline ----------------------------------------------------------------------------------

    def _route(self, method: str, path: str) -> _Routed:
        """The route of ``method path``, memoised: paths repeat, and reading one costs microseconds."""
        key = (method, path)
        routed = self._routed.get(key)
        if routed is None:
            parsed = parse_path(path)
            match = self.routes.match(method, parsed.segments)
            check_allowed(parsed, match.route if match else None, self.strict_paths)
            routed = (match, self._access(match), None if match is None else match.resource())
            if len(path) <= 512:  # bounded: clients choose paths
                self._routed.put(key, routed)
        return routed

    def _run(self, request: Request, state: _State) -> None:
        match, access, state.resource = self._route(request.method, request.path)
        if match is not None:
            state.route = match.route
            state.action = match.route.action
        # Route whitelists are looked up whatever the store holds: first in the pipeline, a lookup missing the cache
        # reads the store, and one at a newer revision drops every cache before the request is placed (the process
        # that changed the store sees its change at once).
        self._whitelist(_ROUTE, state, *(() if match is None else (match.route.name, state.action)))
        if access is _PUBLIC:
            return
        credential, principal = self.authenticate(request)
        state.credential, state.principal = credential, principal
        body = parse_body(request, match, self.max_json_body)
        in_body = body_workspace_ids(body, match)
        if body is not None and credential.unsigned_payload and (in_body or picks_action(body, match)):
            # The signature does not cover the body: it must not be what places or names the request.
            raise UnsignedPayloadRefused("a body that names the workspace or the action must be signed")
        state.workspace = resolve_workspace(self.identity.workspace, request, match, in_body, principal)
        state.project = self._project(request, match, principal, credential)
        session = credential.session
        caller = () if session is None or session.agency_id is None else (session.user_id,)
        listed = self._listed()  # no user or workspace whitelist in the store: none of their lookups
        if listed:
            if _USER in listed:
                self._whitelist(_USER, state, principal.user_id, *caller)  # an agency's caller's too
            if _WORKSPACE in listed:
                self._whitelist(_WORKSPACE, state, state.workspace.id)
        state.policy_context = context = policy_facts(
            principal,
            current_time=self._now(),
            mfa=credential.mfa or (session is not None and session.mfa),
            source_ip=state.client,
            workspace=state.workspace,
            project=state.project,
        )
        if access is _AUTHENTICATE_ONLY or match is None:
            return
        # A body field adds its action to the route's (ModelArts starts a service through its update route, and
        # the same body may update it too): every one must be allowed.
        actions = [state.action or ""]
        for action in body_actions(body, match):
            if action not in actions:
                self._whitelist(_ROUTE, state, action)
                actions.append(action)
        state.actions = tuple(actions)
        for action in actions:
            state.action = action
            state.decision = decision = self._decide(principal, action, state.resource, context, credential)
            if not decision.allowed:
                raise ActionDenied(f"{action}: {decision.reason}")

    def _allowed_actions(self, context: AuthContext) -> tuple[str, ...]:
        """``context.allowed_actions``, memoised per policy set (a changed policy, or a store revision that recompiled
        it, is a new set), session policy set, legacy rule and the facts of the context its decisions read (the
        workspace, say): a principal's requests in one workspace decide the catalog once."""
        principal, credential = context.principal, context.credential
        assert principal is not None
        policies = principal.policies
        narrowing, legacy = self._policy_options(credential)
        facts = context.policy_context
        read = policies.facts_read(self.actions, facts)
        narrowed = () if narrowing is None else narrowing.facts_read(self.actions, facts)
        key: tuple[Any, ...] | None = None
        if read is not None and narrowed is not None:
            key = (policies.version, None if narrowing is None else narrowing.version, legacy, read, narrowed)
            try:
                known = self._allowed.get(key)
            except TypeError:  # a fact no dict key can hold
                key = known = None
            if known is not None:
                return known
        allowed = tuple(policies.allowed_actions(self.actions, facts, session=narrowing, legacy=legacy))
        if key is not None:
            self._allowed.put(key, allowed)
        return allowed

    def _access(self, match: Match | None) -> Access:
        if match is not None:
            return match.route.access
        if self.routes.unmatched is Unmatched.DENY:
            raise RouteNotAllowed("no route matches the request")
        return Access(self.routes.unmatched.value)

    def _credential(self, request: Request) -> Credential:
        token = request.headers.get("x-auth-token")
        if token is None:
            return self.verifier.verify(request)
        if self.verifier.scheme_of(request) is not None:
            raise MultipleCredentials("both X-Auth-Token and a signature")
        token = token.strip()
        if self.issuers:  # the unverified iss only picks the verifier, which checks it again
            trusted = self.issuers.get(peek_issuer(token) or "")
            if trusted is not None:
                return self._external(token, trusted)
        if self.tokens is None:
            raise SchemeDisabled("IAM tokens are not enabled on this guard")
        claims = self.tokens.verify(token)
        return Credential(
            AuthMethod.TOKEN,
            "token",
            claims.token_id,
            claims.user_id,
            claims.issued_at,
            project=claims.project_id,
            mfa=claims.mfa,
            expires_at=claims.expires_at,
            kind=CredentialKind.IAM_TOKEN,
        )

    def _external(self, token: str, trusted: TrustedIssuer) -> Credential:
        """A token of an external issuer, for the user of the issuer's domain that it names."""
        identity = trusted.verifier.verify(token)
        user_id = self.identity.user_id(trusted.domain, identity.user_name)
        if user_id is None:
            raise InvalidToken(f"the token names no user of domain {trusted.domain}")
        # One id space with authmw's own tokens (32 hex digits), so revocation treats both alike.
        token_id = hashlib.sha256(f"{trusted.issuer}\0{identity.token_id}".encode()).hexdigest()[:32]
        return Credential(
            AuthMethod.TOKEN,
            _EXTERNAL,
            token_id,
            user_id,
            identity.issued_at,
            expires_at=identity.expires_at,
            kind=CredentialKind.EXTERNAL_TOKEN,
        )

    def _session_principal(self, session: Session) -> Principal:
        """Whom temporary credentials act as: the caller (``token`` method) or the agency it assumed. Either way the
        caller must still be enabled, the token it asked with not revoked (the access key still active), and
        (authmw's own token) its password not changed since."""
        caller = self.identity.principal(session.user_id)
        if caller is None:
            raise InvalidSecurityToken("the session's caller is unknown or disabled")
        if session.token_id is not None and self.identity.token_revoked(session.token_id):
            raise InvalidSecurityToken("the token the session was obtained with was revoked")
        if session.access_key_id is not None and self.identity.get_access_key(session.access_key_id) is None:
            raise InvalidSecurityToken("the access key the session was obtained with is disabled or gone")
        changed = caller.password_changed_at
        if session.iam_token and changed is not None and changed > session.issued_at:
            raise InvalidSecurityToken("the caller's password changed after the session was obtained")
        if session.agency_id is None:
            return caller
        agency = self.identity.agency(session.agency_id)  # acting as the agency, with exactly its policies
        if agency is None:
            raise InvalidSecurityToken("the security token's agency no longer exists")
        return agency

    def _check_token_holder(self, credential: Credential, principal: Principal) -> None:
        """A token stops working when it is revoked or its user's password changes (IAM does the same); an
        external issuer's token does not depend on the store's password."""
        if self.identity.token_revoked(credential.access_key):
            raise InvalidToken("the token was revoked")
        changed = principal.password_changed_at
        if changed is not None and changed > credential.signed_at and credential.kind is not _EXTERNAL_TOKEN:
            raise InvalidToken("the password changed after the token was issued")

    def _decide(
        self,
        principal: Principal,
        action: str,
        resource: str | None,
        context: Mapping[str, Any],
        credential: Credential | None,
    ) -> Decision:
        narrowing, legacy = self._policy_options(credential)
        return principal.policies.decide(action, resource, context, session=narrowing, legacy=legacy)

    def _policy_options(self, credential: Credential | None) -> tuple[PolicySet | None, bool]:
        """The session policy that narrows the principal's (both sets must allow), and whether the ModelArts
        legacy rule applies: only if configured, and never to a session policy or an agency (which has exactly
        its policies)."""
        session = None if credential is None else credential.session
        if session is None:
            return None, self.default_allow_without_policies
        narrowing = session.policies
        return narrowing, self.default_allow_without_policies and narrowing is None and session.agency_id is None

    def _project(
        self, request: Request, match: Match | None, principal: Principal, credential: Credential
    ) -> Project | None:
        from_path = None if match is None else match.params.get("project_id")
        from_header = request.headers.get("x-project-id")
        if from_path is not None and from_header is not None and from_path != from_header:
            raise ConflictingProject("the path and X-Project-Id name different projects")
        project_id = from_path or from_header
        scoped, scope = _project_scope(credential)
        if scoped:
            if project_id is None:
                project_id = scope  # the token's own project, if it has one
            elif project_id != scope:
                raise TokenScopeMismatch("the token is scoped to another project (or to the domain)")
        if project_id is None:
            return None
        project = self.identity.project(project_id) if len(project_id) <= 64 else None
        if project is None or project.domain_id != principal.domain_id:
            raise ProjectNotFound("no such project in the principal's domain")
        return project

    def _whitelist(self, scope: WhitelistScope, state: _State, *names: str | None) -> None:
        for name in names:
            if name is not None and not self.identity.whitelist(scope, name).allows(state.client):
                raise AddressNotAllowed(f"client address not in the {scope.value} whitelist of {name}")


class _State:
    """What the pipeline has established so far (mutable while it runs; frozen into an AuthContext)."""

    __slots__ = (
        "action",
        "actions",
        "client",
        "credential",
        "decision",
        "policy_context",
        "principal",
        "project",
        "request_id",
        "resource",
        "route",
        "workspace",
    )

    def __init__(self, request_id: str, client: str | None) -> None:
        self.request_id = request_id
        self.client = client
        self.route: Route | None = None
        self.action: str | None = None
        self.actions: tuple[str, ...] = ()
        self.resource: str | None = None
        self.principal: Principal | None = None
        self.credential: Credential | None = None
        self.workspace: Workspace | None = None
        self.project: Project | None = None
        self.decision: Decision | None = None
        self.policy_context: Mapping[str, Any] = {}

    def context(self, guard: Guard, error: AuthmwError | None) -> AuthContext:
        return _new_context(
            self.request_id,
            self.client,
            self.route,
            self.action,
            self.resource,
            self.principal,
            self.credential,
            self.workspace,
            self.project,
            self.decision,
            error,
            self.policy_context,
            guard._allowed_actions,
            [],  # the allowed actions, once computed
            self.actions,
        )


def _project_scope(credential: Credential) -> tuple[bool, str | None]:
    """Whether the credential is scoped like an authmw IAM token, and its project (None: the domain). Temporary
    credentials obtained with such a token keep its scope (unless they act as an agency of another domain, whose
    projects the token never named); external issuers' tokens and access keys have none."""
    if credential.method is _TOKEN:
        return credential.kind is not _EXTERNAL_TOKEN, credential.project
    session = credential.session
    own_domain = session is not None and session.agency_domain_id in (None, session.domain_id)
    if session is not None and session.iam_token and own_domain:  # an agency of another domain: its projects
        return True, session.project_id
    return False, None
