"""Immutable values that cross authmw's boundaries."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from authmw.errors import MalformedRequest

if TYPE_CHECKING:
    from authmw.errors import AuthmwError
    from authmw.policy import Decision, PolicySet
    from authmw.routes import Route

__all__ = [
    "AccessKey",
    "AuthContext",
    "AuthMethod",
    "AuthType",
    "Credential",
    "CredentialKind",
    "Principal",
    "Project",
    "Request",
    "Session",
    "WhitelistScope",
    "Workspace",
]


_V = TypeVar("_V")


def _builder(cls: type[_V]) -> Callable[..., _V]:
    """A positional constructor of the frozen, slotted dataclass ``cls`` for the per-request values of the hot path:
    each field is stored through its slot's descriptor, which is where the dataclass's ``object.__setattr__`` lands
    after a lookup by name per field (measured ~1.9x faster on a 15-field value; a plain class is faster still, but
    would let users mutate what the pipeline decided). The instances are the dataclass's own (frozen, equal, shown
    and ``replace``-able as any other). No defaults, factories or ``__post_init__``: the caller passes every field."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    namespace.update((f"_set{i}", cls.__dict__[name].__set__) for i, name in enumerate(names))
    params = ", ".join(f"a{i}" for i in range(len(names)))
    stores = "".join(f"    _set{i}(self, a{i})\n" for i in range(len(names)))
    source = f"def build({params}):\n    self = _new(_cls)\n{stores}    return self\n"
    exec(source, namespace)  # noqa: S102 -- generated as dataclasses generates __init__, from field names only
    return namespace["build"]  # type: ignore[no-any-return]


def _target(value: str | bytes) -> str:
    # surrogateescape keeps any byte sequence of the request-target reversible.
    return value if isinstance(value, str) else value.decode("utf-8", "surrogateescape")


def _header(value: str | bytes) -> str:
    # The SDKs send non-ASCII header values as UTF-8; clients built on http.client send them as ISO-8859-1
    # (HTTP's historic charset) while having signed the text. Decoding by whichever applies recovers the text.
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


@dataclass(frozen=True, slots=True)
class Request:
    """An HTTP request as authmw's core sees it: transport-free, already read.

    ``path`` and ``query`` are the raw request-target parts as received (percent-encoded, no decoding);
    ``headers`` maps lower-case names to values (a repeated header's values are trimmed and joined with
    ``,``, as SigV4 canonicalises them); treat it as read-only. Build one with :meth:`Request.build`.
    """

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    client: str | None = None

    @classmethod
    def build(
        cls,
        method: str,
        target: str | bytes,
        headers: Iterable[tuple[str | bytes, str | bytes]] | Mapping[str, str] = (),
        body: bytes = b"",
        client: str | None = None,
    ) -> Request:
        """Build from a method, a request-target (``/path?query``) and headers in wire order."""
        target = _target(target)
        if not target.startswith("/"):
            raise MalformedRequest("request-target must be an absolute path")
        if "#" in target:
            # RFC 9112 §3.2: a request-target has no fragment. Servers disagree on it (uvicorn's h11 keeps "#..."
            # in the path the app routes on, werkzeug and httptools cut it off): no reading would be safe.
            raise MalformedRequest("a request-target has no fragment")
        path, _, query = target.partition("?")
        # An ASGI server's list first: an isinstance() against the Mapping ABC costs a fifth of a microsecond.
        pairs = headers if type(headers) is list else headers.items() if isinstance(headers, Mapping) else headers
        merged: dict[str, str] = {}
        repeated: dict[str, list[str]] | None = None
        for raw_name, raw_value in pairs:  # the hot path of every adapter: decoding inlined for bytes
            if not raw_name.isascii():  # checked before lower(): "X-Sd\u212a-Date" lower-cases to x-sdk-date
                raise MalformedRequest("non-ASCII header name")
            name = (raw_name if isinstance(raw_name, str) else raw_name.decode("ascii")).lower()
            if isinstance(raw_value, str):
                value = raw_value
            elif raw_value.isascii():
                value = raw_value.decode("ascii")
            else:
                value = _header(raw_value)
            if name in merged:
                if repeated is None:
                    repeated = {}
                repeated.setdefault(name, [merged[name].strip()]).append(value.strip())
            else:
                merged[name] = value
        if repeated:
            for name, values in repeated.items():
                merged[name] = ",".join(values)
        if cls is Request:
            return _new_request(method.upper(), path, query, merged, bytes(body), client)
        return cls(method.upper(), path, query, merged, bytes(body), client)

    @property
    def target(self) -> str:
        """The request-target as received."""
        return f"{self.path}?{self.query}" if self.query else self.path


_new_request = _builder(Request)


def _with_body(head: Request, body: bytes) -> Request:
    """``head`` (a request built before its body was read, for the precheck) with ``body``: the adapters' way to
    not decode the headers twice (``dataclasses.replace`` would, through ``__init__``, cost more than that)."""
    return _new_request(head.method, head.path, head.query, head.headers, body, head.client)


class AuthMethod(enum.Enum):
    """How a request proved its identity (the ``X-Authmw-Auth-Method`` values)."""

    TOKEN = "token"
    AKSK = "aksk"
    TEMPORARY = "temporary"


class CredentialKind(enum.Enum):
    """What proved a request's identity: security checks branch on it, never on a scheme's name."""

    SIGNATURE = "signature"  # a permanent access key's signature (AK/SK)
    TEMPORARY = "temporary"  # a temporary access key's signature, with its security token
    IAM_TOKEN = "iam_token"  # an authmw IAM token (X-Auth-Token): revocable, scoped, ends with a password change
    EXTERNAL_TOKEN = "external_token"  # an external (OIDC) issuer's token: no scope, no password of ours


_KIND_OF_METHOD = {AuthMethod.AKSK: CredentialKind.SIGNATURE, AuthMethod.TEMPORARY: CredentialKind.TEMPORARY}


@dataclass(frozen=True, slots=True)
class Session:
    """What a security token holds: the temporary key, who asked for it, whom it acts as, until when.

    ``user_*`` name the original caller; ``agency_*`` the agency it assumed (None for the ``token`` method,
    where the session acts as the caller). ``policy`` is the session policy document (JSON text) that narrows
    the session's permissions; ``policies`` is it compiled. ``token_id`` is the token the caller authenticated
    with (revoking it ends the session), ``access_key_id`` the permanent key it signed with (disabling it ends the
    session); ``iam_token`` says the token was authmw's own, whose project scope (``project_id``; None: the
    domain) the session keeps.
    """

    access_key: str
    secret_key: str = field(repr=False)
    issued_at: int
    expires_at: int
    user_id: str
    user_name: str
    domain_id: str
    domain_name: str
    agency_id: str | None = None
    agency_name: str | None = None
    agency_domain_id: str | None = None
    agency_domain_name: str | None = None
    policy: str | None = field(default=None, repr=False)
    mfa: bool = False
    token_id: str | None = None
    iam_token: bool = False
    project_id: str | None = None
    access_key_id: str | None = None
    policies: PolicySet | None = field(default=None, repr=False, compare=False)

    @property
    def chain(self) -> tuple[str, ...]:
        """The delegation chain as ``domain/name`` links: caller → agency → this session's access key."""
        links = [f"{self.domain_name}/{self.user_name}"]
        if self.agency_name is not None:
            links.append(f"{self.agency_domain_name}/{self.agency_name}")
        return (*links, f"session/{self.access_key}")


@dataclass(frozen=True, slots=True)
class AccessKey:
    """An access key and its secret, as a key source or a security-token resolver returns it."""

    access_key: str
    secret_key: str = field(repr=False)
    owner: str | None = None
    temporary: bool = False
    session: Session | None = field(default=None, repr=False, compare=False)  # a temporary key's session

    #: How a temporary access key starts, so the verifier can tell a request that forgot its security token
    #: (``security_token_required``) from one naming an unknown key, with no per-session state.
    TEMPORARY_PREFIX: ClassVar[str] = "TEMP"
    TEMPORARY_LENGTH: ClassVar[int] = 20

    @classmethod
    def looks_temporary(cls, access_key: str) -> bool:
        """Whether ``access_key`` has the form of a temporary key: its form only (a permanent key of that form,
        which the store may hold, is looked up first)."""
        return (
            len(access_key) == cls.TEMPORARY_LENGTH
            and access_key.startswith(cls.TEMPORARY_PREFIX)
            and access_key.isascii()
            and access_key.isalnum()
            and access_key == access_key.upper()
        )


@dataclass(frozen=True, slots=True)
class Credential:
    """What a verified request signature (or IAM token) established.

    For a token, ``scheme`` is ``"token"`` (``"oidc"`` for an external issuer's), ``access_key`` the token id,
    ``signed_at`` its issue time, ``expires_at`` its expiry, ``project`` the project it is scoped to (None: domain
    scope) and ``mfa`` whether the login used MFA. ``kind`` is what the checks read; the verifier and the guard
    set it, and one built without it gets it from ``method`` (a token: an IAM token unless its scheme is
    ``"oidc"``, the strictest reading).
    """

    method: AuthMethod
    scheme: str
    access_key: str
    owner: str | None
    signed_at: int
    region: str | None = None
    service: str | None = None
    security_token: str | None = field(default=None, repr=False)
    unsigned_payload: bool = False
    project: str | None = None
    mfa: bool = False
    session: Session | None = field(default=None, repr=False, compare=False)  # temporary credentials only
    expires_at: int | None = None  # tokens: when the token expires
    kind: CredentialKind | None = None

    def __post_init__(self) -> None:
        if self.kind is None:
            kind = _KIND_OF_METHOD.get(self.method)
            if kind is None:
                kind = CredentialKind.EXTERNAL_TOKEN if self.scheme == "oidc" else CredentialKind.IAM_TOKEN
            object.__setattr__(self, "kind", kind)


#: Credential(method, scheme, access_key, owner, signed_at, region, service, security_token, unsigned_payload,
#: project, mfa, session, expires_at, kind), every field given (``kind`` too): the verifier's, per request.
_new_credential: Callable[..., Credential] = _builder(Credential)


class AuthType(enum.Enum):
    """Who may enter a workspace (ModelArts ``auth_type``)."""

    PUBLIC = "PUBLIC"
    PRIVATE = "PRIVATE"
    INTERNAL = "INTERNAL"


class WhitelistScope(enum.Enum):
    """What an IP whitelist is attached to."""

    USER = "user"
    WORKSPACE = "workspace"
    ROUTE = "route"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated IAM user with the policies in effect for it (its own and its groups')."""

    user_id: str
    user_name: str
    domain_id: str
    domain_name: str
    groups: frozenset[str]
    policies: PolicySet = field(repr=False, compare=False)
    is_admin: bool = False
    password_changed_at: int | None = None  # tokens issued before it are no longer valid


@dataclass(frozen=True, slots=True)
class Project:
    """A region-scoped project of a domain (the ``{project_id}`` of ModelArts URLs)."""

    id: str
    name: str
    domain_id: str
    region: str


@dataclass(frozen=True, slots=True)
class Workspace:
    """A logically isolated space; ``domain_id`` is None for the default workspace shared by every domain."""

    id: str
    name: str
    domain_id: str | None
    auth_type: AuthType
    owner_id: str | None = None
    granted_users: frozenset[str] = frozenset()
    granted_groups: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class AuthContext:
    """What the pipeline established about a request; the app receives it (``scope["authmw"]``).

    ``principal`` and ``credential`` are None on a public route; ``decision`` names the deciding statement
    (None when the route needs no action); ``error`` is set only in dry-run mode, holding the refusal that
    enforce mode would have sent.
    """

    request_id: str
    client: str | None
    route: Route | None = None
    action: str | None = None
    resource: str | None = None
    principal: Principal | None = None
    credential: Credential | None = None
    workspace: Workspace | None = None
    project: Project | None = None
    decision: Decision | None = None
    error: AuthmwError | None = None
    policy_context: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    _lister: Callable[[AuthContext], tuple[str, ...]] | None = field(default=None, repr=False, compare=False)
    _memo: list[tuple[str, ...]] = field(default_factory=list, repr=False, compare=False)
    #: Every action the request needed, in the order decided: the route's, then each its body picked
    #: (``action`` is the last one decided: on a refusal, the one denied).
    actions: tuple[str, ...] = ()

    @property
    def auth_method(self) -> AuthMethod | None:
        """``token``, ``aksk`` or ``temporary`` (None when unauthenticated)."""
        return None if self.credential is None else self.credential.method

    @property
    def workspace_id(self) -> str | None:
        return None if self.workspace is None else self.workspace.id

    @property
    def agency(self) -> str | None:
        """The agency whose temporary credentials made the request (None otherwise)."""
        session = None if self.credential is None else self.credential.session
        return None if session is None else session.agency_name

    @property
    def delegation(self) -> tuple[str, ...]:
        """Who acts for whom, as ``domain/name`` links: the original caller → the agency → the session (for
        temporary credentials); just the principal otherwise; empty when unauthenticated."""
        session = None if self.credential is None else self.credential.session
        if session is not None:
            return session.chain
        return () if self.principal is None else (f"{self.principal.domain_name}/{self.principal.user_name}",)

    @property
    def allowed_actions(self) -> tuple[str, ...]:
        """The catalog actions this principal may perform in this workspace (computed on first use)."""
        if not self._memo:
            self._memo.append(() if self.principal is None or self._lister is None else self._lister(self))
        return self._memo[0]


#: AuthContext(request_id, client, route, action, resource, principal, credential, workspace, project, decision,
#: error, policy_context, _lister, _memo, actions), every field given (``_memo`` a new empty list): the guard's.
_new_context: Callable[..., AuthContext] = _builder(AuthContext)
