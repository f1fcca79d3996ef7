"""authmw configuration: one frozen :class:`Settings`, read from YAML at the edge and checked at start-up."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from authmw.errors import ConfigurationError
from authmw.extras import requires
from authmw.tokens import TOKEN_ALGORITHMS

__all__ = ["Settings", "load_settings"]


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _flag(value: Any) -> bool:
    return isinstance(value, bool)


def _texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _count(low: int, high: int) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda value: value in choices


def _mode(value: Any) -> bool:
    from authmw.guard import MODES  # on use: the guard imports the whole pipeline, which the CLI's store verbs skip

    return value in MODES


def _mappings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


# name → (check, what a valid value is)
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "store": (_text, "a store URL"),
    "master_key_file": (_text, "a file name"),
    "whitelist_limit": (_count(1, 1000), "an integer 1-1000"),
    "mode": (_mode, "enforce or dry-run"),
    "unmatched": (_one_of("deny", "authenticate-only", "public"), "deny, authenticate-only or public"),
    "trusted_proxies": (_texts, "a list of addresses or CIDR blocks"),
    "forwarded_header": (_one_of("x-forwarded-for", "forwarded"), "x-forwarded-for or forwarded"),
    "presets": (lambda v: _texts(v) and set(v) <= {"modelarts"}, "a list of preset names (modelarts)"),
    "serve_workspaces": (_flag, "true or false"),
    "routes": (_mappings, "a list of routes (mappings with method, path, action, ...)"),
    "openapi": (_text, "an OpenAPI document file (JSON or YAML)"),
    "strict_paths": (_flag, "true or false"),
    "default_allow_without_policies": (_flag, "true or false"),
    "allow_unsigned_payload": (_flag, "true or false"),
    "max_body": (_count(0, 1 << 34), "a size in bytes"),
    "max_json_body": (_count(0, 1 << 34), "a size in bytes"),
    "max_skew": (_count(0, 86_400), "seconds 0-86400"),
    "upstream": (_text, "an http(s) URL"),
    "listen": (_text, "HOST:PORT"),
    "audit_log": (_text, "a file name, or - for standard error"),
    "assertion_ttl": (_count(1, 3600), "seconds 1-3600"),
    "assertion_audience": (_text, "the name the upstream expects as the assertion's aud"),
    "forward_credentials": (_flag, "true or false"),
    "drop_underscore_headers": (_flag, "true or false"),
    "allowed_actions_header": (_flag, "true or false"),
    "header_timeout": (_count(1, 3600), "seconds 1-3600"),
    "body_timeout": (_count(1, 86_400), "seconds 1-86400"),
    "body_budget": (_count(0, 1 << 40), "a size in bytes"),
    "max_connections": (_count(1, 1_000_000), "an integer 1-1000000"),
    "token_algorithm": (_one_of(*TOKEN_ALGORITHMS), "EdDSA, ES256 or RS256"),
    "token_algorithms": (
        lambda v: _texts(v) and bool(v) and set(v) <= set(TOKEN_ALGORITHMS),
        "a non-empty list of EdDSA, ES256, RS256",
    ),
    "token_issuers": (_mappings, "a list of issuers (mappings with issuer, jwks_url, domain, ...)"),
    "replay_protection": (_flag, "true or false"),
    "replay_capacity": (_count(1, 1 << 30), "a number of requests 1-1073741824"),
    "replay_quota": (_count(1, 1 << 30), "a number of requests 1-1073741824"),
    "shared_state": (_text, "a redis://HOST:PORT/DB URL"),
    "shared_state_prefix": (lambda v: _text(v) and 0 < len(v) <= 100, "text of 1-100 characters"),
    "shared_state_timeout": (_count(1, 10_000), "milliseconds 1-10000"),
    "shared_state_fallback": (_one_of("refuse", "local"), "refuse or local"),
    "security_token_limit": (_count(1, 1_000_000), "a number of security tokens 1-1000000"),
    "store_timeout": (_count(1, 60_000), "milliseconds 1-60000"),
    "store_statement_timeout": (_count(1, 3_600_000), "milliseconds 1-3600000"),
    "store_connect_timeout": (_count(2, 600), "seconds 2-600"),
    "store_keepalive": (_count(1, 3600), "seconds 1-3600"),
    "store_pool_size": (_count(1, 1000), "an integer 1-1000"),
    "store_grace": (_count(0, 86_400), "seconds 0-86400"),
    "upstream_connect_timeout": (_count(1, 600_000), "milliseconds 1-600000"),
    "upstream_timeout": (_count(1, 86_400), "seconds 1-86400"),
    "upstream_pool_timeout": (_count(1, 600_000), "milliseconds 1-600000"),
    "upstream_pools": (_count(1, 1024), "an integer 1-1024"),
    "upstream_pool_connections": (_count(1, 10_000), "an integer 1-10000"),
}


@dataclass(frozen=True, slots=True)
class About:
    """What a setting means to a reader and what overrides it; ``default`` is the default as a reader should see
    it, when the field's own default is a placeholder (``None``: computed at start-up)."""

    help: str
    env: str | None = None
    flag: str | None = None
    default: str | None = None


#: Setting name → what it means: the one home of each setting's description (docs/configuration.md is generated
#: from it, the field defaults and the rules above; a setting without an entry fails the docs check).
ABOUT: dict[str, About] = {
    "store": About(
        "The identity store: `sqlite:///PATH` (embedded, one host) or `postgresql://USER@HOST/DB` (several).",
        env="AUTHMW_STORE",
        flag="--store",
        default="sqlite:///./authmw.db",
    ),
    "master_key_file": About(
        (
            "The file holding the master key that seals stored secrets (one base64 key per line, refused if "
            "group- or world-readable); `AUTHMW_MASTER_KEY` (base64 keys, comma-separated) takes precedence."
        ),
        env="AUTHMW_MASTER_KEY_FILE",
        default="./authmw.key",
    ),
    "whitelist_limit": About("The most addresses or CIDR blocks one IP whitelist may hold."),
    "mode": About(
        (
            "`enforce` refuses what the pipeline refuses; `dry-run` decides, logs and tags, but passes every "
            "request on (the context carries the error)."
        ),
        flag="authmw proxy --dry-run",
    ),
    "unmatched": About(
        "Requests no route matches: `deny` (403 `route_not_allowed`), `authenticate-only` (any valid "
        "credential) or `public` (no credential)."
    ),
    "trusted_proxies": About(
        "Addresses or CIDR blocks of the proxies in front of authmw whose forwarding header is believed (a "
        "warning if it covers every address)."
    ),
    "forwarded_header": About(
        "The one forwarding header the trusted proxies write and authmw reads: `x-forwarded-for` or "
        "`forwarded` (RFC 7239); the other is ignored, whatever the client sent."
    ),
    "presets": About(
        "Built-in route catalogs in force (`modelarts`).",
        default="[modelarts] when no routes are configured or declared",
    ),
    "serve_workspaces": About(
        "With the `modelarts` preset: authmw answers the ModelArts workspace API (`/v1/{project_id}/workspaces` "
        "create, list, show, update, delete) from its store, after the guard authorized the request; off, those "
        "requests go upstream like any other."
    ),
    "routes": About(
        "Your routes: mappings with `method`, `path`, `action` or `access`, and optionally `resource`, "
        "`path_allow`, `body_actions`, `workspace_fields` (see docs/routes.md)."
    ),
    "strict_paths": About(
        "Refuse ambiguous path spellings (`%2F`, `\\`, `%2E`, `;`, `//`) unless the route allows them."
    ),
    "default_allow_without_policies": About(
        "ModelArts' legacy rule: a user with no policy at all may do all of ModelArts."
    ),
    "allow_unsigned_payload": About(
        "Accept `UNSIGNED-PAYLOAD` and `STREAMING-UNSIGNED-PAYLOAD-TRAILER`, as the official SDKs send for "
        "uploads (the body is then left to TLS)."
    ),
    "max_body": About("The largest body hashed for a signed payload, in bytes (413 `body_too_large` beyond)."),
    "max_json_body": About(
        "The largest body the guard parses to find a workspace or a body action, in bytes (413 "
        "`json_body_too_large` beyond)."
    ),
    "max_skew": About(
        "Seconds a signed request's date may differ from the server clock, each way (401 `date_out_of_window` beyond)."
    ),
    "upstream": About("The proxy: where allowed requests are forwarded.", flag="authmw proxy --upstream"),
    "listen": About("The proxy: the address it listens on.", flag="authmw proxy --listen"),
    "audit_log": About(
        "The proxy and authz: the audit log file, `-` for standard error, written off the request's path by a "
        "background thread (docs/audit.md).",
        flag="authmw proxy --audit-log",
        default="- (standard error)",
    ),
    "assertion_ttl": About("The proxy: seconds an `X-Authmw-Assertion` stays valid."),
    "assertion_audience": About(
        "The proxy: the assertion's `aud`, which the upstream passes to `verify_assertion(..., audience=)`.",
        default="the origin of upstream (scheme://host:port)",
    ),
    "forward_credentials": About(
        "The proxy: send the caller's credentials (`Authorization`, `X-Auth-Token`, security tokens, "
        "presigned parameters) upstream, for upstreams that verify them again."
    ),
    "drop_underscore_headers": About(
        "The proxy: drop header names containing `_` (when kept, those folding onto a protected or present "
        "name are still dropped)."
    ),
    "allowed_actions_header": About(
        "The proxy and authz: send `X-Authmw-Allowed-Actions` upstream (every catalog action the caller may "
        "perform: a few KiB per request with the ModelArts preset). `false` saves building, sending and parsing "
        "it when the upstream does not read it; the other identity headers and the assertion are unchanged."
    ),
    "header_timeout": About("The proxy: seconds for a request's head to arrive (408 `request_timeout`)."),
    "body_timeout": About("Seconds for a request's body to arrive (408 `request_timeout`)."),
    "body_budget": About("Bytes of request bodies held in memory at once (503 `server_busy` beyond)."),
    "max_connections": About("The proxy: open connections at most (uvicorn answers 503 beyond)."),
    "token_algorithm": About(
        "The algorithm new IAM tokens are signed with (`ES256` and `RS256` need a key: `authmw signing-key "
        "rotate --algorithm ES256`)."
    ),
    "token_algorithms": About(
        "The algorithms an `X-Auth-Token` may be signed with; must include `token_algorithm` (the token never chooses)."
    ),
    "token_issuers": About(
        "External OIDC issuers whose tokens are accepted as `X-Auth-Token`: mappings with `issuer`, "
        "`jwks_url`, `domain`, `user_claim`, `audience`, `algorithms`, `grace`, `min_refetch` (see "
        "docs/access-model.md)."
    ),
    "openapi": About(
        "An OpenAPI document file (JSON, or YAML with PyYAML) whose operations name their action (`x-iam-action`, "
        "`x-iam-resource`, `x-iam-access: public | authenticate-only`); its routes join `routes` and, as they do, "
        "turn the default `modelarts` preset off."
    ),
    "replay_protection": About(
        "Accept each signed request once (off: a captured request can be replayed until its date leaves the "
        "`max_skew` window)."
    ),
    "replay_capacity": About("Signed requests the replay guard remembers at most (503 `replay_cache_full` beyond)."),
    "replay_quota": About(
        "One user's share of the replay guard (429 `replay_quota_exceeded` beyond).",
        default="a quarter of replay_capacity",
    ),
    "shared_state": About(
        (
            "Where several authmw processes share their runtime state — the replay window, the login and "
            "security-token limits, change notices: `redis://[:PASSWORD@]HOST:PORT/DB` (`rediss://` for TLS). "
            "Without it each process keeps its own (right for one process only; `authmw proxy --workers N` "
            "needs it)."
        ),
        env="AUTHMW_SHARED_STATE",
        flag="authmw proxy --shared-state",
        default="none (in-process)",
    ),
    "shared_state_prefix": About("The prefix of every key authmw writes in the shared state (one per deployment)."),
    "shared_state_timeout": About(
        "Milliseconds each connect to, and each answer from, the shared state may take (then it counts as down "
        "until it answers a PING again, probed every 0.1 s). Raise it where processes are often stalled longer "
        "(CPU-throttled containers)."
    ),
    "shared_state_fallback": About(
        "The shared state down: `refuse` what needs it (503 `shared_state_unavailable`: replay checks, logins, "
        "security tokens), or `local`: check in the process alone, with a warning (a replay to another process "
        "is then accepted)."
    ),
    "security_token_limit": About(
        "Security tokens one user, and one access key or token, may obtain per minute; ten times that from one "
        "client address (429 `too_many_attempts` beyond)."
    ),
    "store_timeout": About(
        "The proxy: milliseconds a request waits for the store, pool wait included (503 `store_unavailable` "
        "beyond; the event loop is never held longer; an answer that comes later is still cached). Raise it where "
        "processes are often stalled longer (CPU-throttled containers)."
    ),
    "store_statement_timeout": About(
        "The proxy on PostgreSQL: milliseconds one statement may run on the server (`statement_timeout`)."
    ),
    "store_connect_timeout": About(
        "The proxy on PostgreSQL: seconds to open a connection (libpq's floor is 2); requests never wait for it, "
        "only the pool's own threads do."
    ),
    "store_keepalive": About(
        "The proxy on PostgreSQL: TCP keepalive idle seconds (then 1 s probes, 3 of them, and the same bound on "
        "unacknowledged data), so a blackholed connection is dropped instead of hanging."
    ),
    "store_pool_size": About("The proxy on PostgreSQL: connections to the store at most."),
    "store_grace": About(
        "Seconds identities already cached stay served while the store is unreachable (others get 503 "
        "`store_unavailable` at once; after the grace, all do)."
    ),
    "upstream_connect_timeout": About("The proxy: milliseconds to connect to the upstream (502 beyond)."),
    "upstream_timeout": About("The proxy: seconds the upstream may take to read the request or send each chunk."),
    "upstream_pool_timeout": About(
        "The proxy: milliseconds a request waits for a free upstream connection (502 beyond)."
    ),
    "upstream_pools": About("The proxy: keep-alive pools to the upstream, used in turn."),
    "upstream_pool_connections": About("The proxy: connections of each upstream pool at most."),
}


@dataclass(frozen=True, slots=True)
class Settings:
    """What a configuration file may set; unknown keys are refused, so a typo fails loudly.

    What each setting means, and the environment variable or flag that overrides it: :data:`ABOUT`.
    """

    store: str | None = None
    master_key_file: str | None = None
    whitelist_limit: int = 5
    mode: str = "enforce"
    unmatched: str = "deny"
    trusted_proxies: tuple[str, ...] = ()
    forwarded_header: str = "x-forwarded-for"
    presets: tuple[str, ...] | None = None
    serve_workspaces: bool = True
    routes: tuple[Mapping[str, Any], ...] = ()
    openapi: str | None = None
    strict_paths: bool = True
    default_allow_without_policies: bool = False
    allow_unsigned_payload: bool = True
    max_body: int = 12 * 1024 * 1024
    max_json_body: int = 1024 * 1024
    max_skew: int = 15 * 60
    upstream: str | None = None
    listen: str = "127.0.0.1:8080"
    audit_log: str | None = None
    assertion_ttl: int = 60
    assertion_audience: str | None = None
    forward_credentials: bool = False
    drop_underscore_headers: bool = True
    allowed_actions_header: bool = True
    header_timeout: int = 10
    body_timeout: int = 60
    body_budget: int = 256 * 1024 * 1024
    max_connections: int = 1024
    token_algorithm: str = "EdDSA"
    token_algorithms: tuple[str, ...] = ("EdDSA",)
    token_issuers: tuple[Mapping[str, Any], ...] = ()
    replay_protection: bool = True
    replay_capacity: int = 1_000_000
    replay_quota: int | None = None
    shared_state: str | None = None
    shared_state_prefix: str = "authmw:"
    shared_state_timeout: int = 50
    shared_state_fallback: str = "refuse"
    security_token_limit: int = 600
    store_timeout: int = 50
    store_statement_timeout: int = 1000
    store_connect_timeout: int = 2
    store_keepalive: int = 5
    store_pool_size: int = 10
    store_grace: int = 30
    upstream_connect_timeout: int = 5000
    upstream_timeout: int = 60
    upstream_pool_timeout: int = 10_000
    upstream_pools: int = 32
    upstream_pool_connections: int = 16
    #: Where each setting and each entry of ``routes`` and ``token_issuers`` is in the file it came from
    #: (``"routes[0]"`` → ``FILE:LINE:COLUMN``), for messages; not a setting.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def where(self, name: str) -> str:
        """``name`` (a setting, or an entry such as ``routes[0]``) prefixed with where it is in its file, if known."""
        source = self.sources.get(name)
        return name if source is None else f"{source}: {name}"

    def __post_init__(self) -> None:
        if self.token_algorithm not in self.token_algorithms:
            raise ConfigurationError(
                f"token_algorithm {self.token_algorithm} is not among token_algorithms: tokens would be refused"
            )

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, origin: str = "configuration", marks: Mapping[str, Mark] | None = None
    ) -> Settings:
        """Settings from ``data``; an error names ``origin``, or where the setting is when ``marks`` (setting →
        ``FILE:LINE:COLUMN`` of its name and of its value) tells."""
        where = marks or {}
        known = set(_RULES)
        unknown = sorted((key for key in data if key not in known), key=str)
        if unknown:
            first = where.get(str(unknown[0]))
            raise ConfigurationError(
                f"{first.key if first else origin}: unknown setting(s) {', '.join(map(str, unknown))}; "
                f"known: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for name, value in data.items():
            if value is None:
                continue
            check, wanted = _RULES[name]
            if not check(value):
                mark = where.get(name)
                raise ConfigurationError(f"{mark.value if mark else origin}: {name} must be {wanted}")
            values[name] = tuple(value) if isinstance(value, list) else value
        sources = {name: mark.value for name, mark in where.items()}
        for mark in where.values():
            sources.update(mark.entries)
        try:
            return cls(**values, sources=MappingProxyType(sources))
        except ConfigurationError as exc:  # a rule across settings (token_algorithm among token_algorithms)
            mark = where.get("token_algorithm") or where.get("token_algorithms")
            raise ConfigurationError(f"{mark.value if mark else origin}: {exc}") from None

    def override(self, values: Mapping[str, Any]) -> Settings:
        """These settings with ``values`` (configuration keys, checked as a file's are) in place of their own; where
        the others came from is kept."""
        own = {name: getattr(self, name) for name in _RULES}
        merged = {name: list(v) if isinstance(v, tuple) else v for name, v in (own | dict(values)).items()}
        overridden = Settings.from_mapping(merged, origin="settings")
        kept = {name: source for name, source in self.sources.items() if name.partition("[")[0] not in values}
        return replace(overridden, sources=MappingProxyType(kept))


@dataclass(frozen=True, slots=True)
class Mark:
    """Where a setting is in its file: ``FILE:LINE:COLUMN`` of its name (``key``) and of its value, and of each
    entry of a list value (``"routes[0]"`` → its place)."""

    key: str
    value: str
    entries: Mapping[str, str] = field(default_factory=dict)


def load_settings(path: str | None) -> Settings:
    """Settings from a YAML file (defaults when ``path`` is None); every error names ``FILE:LINE:COLUMN`` where
    YAML knows it (a syntax error, an unknown or repeated setting, a value of the wrong kind)."""
    if path is None:
        return Settings()
    with requires("yaml", "a YAML configuration file"):
        import yaml
    loader = yaml.SafeLoader(read_text(path))
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "not valid YAML"
        raise ConfigurationError(f"{_at(path, mark)}: not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    finally:
        loader.dispose()
    if node is None or data is None:
        return Settings()
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        raise ConfigurationError(f"{_at(path, node.start_mark)}: expected a mapping of settings")
    marks: dict[str, Mark] = {}
    for key_node, value_node in node.value:
        name = str(key_node.value)
        if name in marks:  # YAML would keep the last silently: a setting given twice is a mistake either way
            raise ConfigurationError(f"{_at(path, key_node.start_mark)}: {name} is set twice")
        entries = {}
        if isinstance(value_node, yaml.SequenceNode):
            entries = {f"{name}[{i}]": _at(path, item.start_mark) for i, item in enumerate(value_node.value)}
        marks[name] = Mark(_at(path, key_node.start_mark), _at(path, value_node.start_mark), entries)
    return Settings.from_mapping(data, origin=path, marks=marks)


def read_text(path: str, *, setting: str = "") -> str:
    """The UTF-8 text of a file the configuration names; a :class:`ConfigurationError` naming the file (after
    ``setting``, the setting that names it) if it cannot be read."""
    prefix = f"{setting}: " if setting else ""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise ConfigurationError(f"{prefix}cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{prefix}{path}: not UTF-8 text") from None


def _at(path: str, mark: Any) -> str:
    """``FILE:LINE:COLUMN`` (1-based, as editors count) of a YAML mark, or the file alone without one."""
    return path if mark is None else f"{path}:{mark.line + 1}:{mark.column + 1}"
