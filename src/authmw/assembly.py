"""Building a :class:`~authmw.guard.Guard` over a store from its settings (edge: opens the store).

:func:`open_guard` is the one way; the proxy, the middleware recipes and the tests all build through it.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from authmw.errors import ChangeRefused, ConfigurationError
from authmw.extras import requires
from authmw.guard import SIGNED_IF_PRESENT, Guard
from authmw.iam_api import AttemptLimiter, MintLimiter, TokenService
from authmw.oidc import TrustedIssuer
from authmw.policy import modelarts_actions
from authmw.routes import Route, RouteCatalog, Routes, modelarts_routes, route_from_mapping, routes_from_openapi
from authmw.sessions import SessionSealer
from authmw.settings import Settings, load_settings, read_text
from authmw.sharedstate import Notices, SharedState
from authmw.signing import ReplayGuard, Verifier
from authmw.signing.verifier import ReplayGuardLike
from authmw.store import CachedIdentity, Store, open_store
from authmw.store.redisstate import shared_state
from authmw.tokens import ISSUER, TokenSigner, TokenVerifier

if TYPE_CHECKING:
    from authmw.client.jwks import JwksKeys

__all__ = [
    "announce_changes",
    "keep_replay_window",
    "open_guard",
    "presets_in_force",
    "replay_guard_of",
    "routes_of",
    "session_sealer",
    "token_limits",
    "token_service",
    "trusted_issuers",
]

_ISSUER_KEYS = {"issuer", "jwks_url", "domain", "audience", "user_claim", "algorithms", "grace", "min_refetch"}

logger = logging.getLogger("authmw")


def open_guard(store: str | Store | None = None, *, config: str | Settings | None = None, **settings: Any) -> Guard:
    """The guard over a store: the one way to build one from a store and a configuration.

    ``store``: a store URL (as ``authmw --store``) or an open :class:`~authmw.store.Store`; by default the
    configuration's ``store``, else ``$AUTHMW_STORE``, else ``sqlite:///./authmw.db``. ``config``: a YAML file
    (as ``authmw --config``) or :class:`~authmw.settings.Settings`. ``settings``: configuration keys that override
    the file's; ``routes`` may mix configuration mappings and :class:`~authmw.routes.Route` values (a ``Routes`` of
    decorated handlers, say), added to the presets and the configured routes.
    """
    base = config if isinstance(config, Settings) else load_settings(config)
    declared: tuple[Route, ...] = ()
    if settings:
        routes = list(settings.get("routes") or ())
        declared = tuple(r for r in routes if isinstance(r, Route))
        if "routes" in settings:  # configured routes replace the file's; declared ones join them
            mappings = [r for r in routes if not isinstance(r, Route)]
            if mappings or not declared:
                settings["routes"] = mappings
            else:
                del settings["routes"]
        base = base.override({k: list(v) if isinstance(v, tuple | Routes) else v for k, v in settings.items()})
    if not isinstance(store, Store):
        store = open_store(store or base.store, whitelist_limit=base.whitelist_limit)
    return _build(base, store, declared)


def presets_in_force(settings: Settings, declared: tuple[Route, ...] = ()) -> tuple[str, ...]:
    """The presets in force: those configured, else ``modelarts`` when no route is configured or declared."""
    if settings.presets is not None:
        return settings.presets
    return () if settings.routes or settings.openapi or declared else ("modelarts",)


def routes_of(settings: Settings, declared: Iterable[Route] = ()) -> RouteCatalog:
    """The presets, the configured routes, those of the ``openapi`` document and the ``declared`` ones, in that
    order (none may redefine another)."""
    declared = tuple(declared)
    routes = [*modelarts_routes()] if "modelarts" in presets_in_force(settings, declared) else []
    routes += [route_from_mapping(r, origin=settings.where(f"routes[{i}]")) for i, r in enumerate(settings.routes)]
    if settings.openapi is not None:
        routes += routes_from_openapi(_document(settings.openapi))
    routes += declared
    return RouteCatalog(routes, unmatched=settings.unmatched)


def _document(path: str) -> Any:
    """An OpenAPI document file: JSON, else YAML (with PyYAML)."""
    text = read_text(path, setting="openapi")
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        import yaml
    except ImportError:
        raise ConfigurationError(f"openapi: {path} is not JSON; a YAML document needs PyYAML") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigurationError(f"openapi: {path} is neither JSON nor YAML") from None


def session_sealer(store: Store, identity: CachedIdentity | None = None) -> SessionSealer:
    """A sealer over the store's sealing keys (the active one seals; a ``kid`` sealed elsewhere reloads them, at
    once if the store changed since: ``identity`` watches its revision)."""
    keys, active = store.sealing_keys()
    revision = None if identity is None else identity.current_revision
    refresh = store.sealing_keys if identity is None else lambda: identity.ask(store.sealing_keys)
    return SessionSealer(keys, active=active, refresh=refresh, revision=revision)


def trusted_issuers(
    settings: Settings,
    *,
    domains: Iterable[str] | None = None,
    fetch: Callable[[str], tuple[bytes, float | None]] | None = None,
    timer: Callable[[], float] = time.monotonic,
    clock: Callable[[], float] = time.time,
) -> list[TrustedIssuer]:
    """The ``token_issuers`` of ``settings``, each verified through its JWKS (``domains``: those of the store,
    to refuse an issuer naming users of a domain that does not exist)."""
    if not settings.token_issuers:
        return []
    if fetch is None:  # the default fetcher imports httpx on its thread, where a missing one would look like an outage
        with requires("client", "token_issuers"):
            importlib.import_module("httpx")
    from authmw.client.jwks import JwksKeys  # deferred: only issuers need it
    from authmw.oidc import OidcIssuer

    known = None if domains is None else set(domains)
    found: list[TrustedIssuer] = []
    key_sets: list[JwksKeys] = []
    for index, entry in enumerate(settings.token_issuers):
        origin = settings.where(f"token_issuers[{index}]")
        unknown = sorted(set(entry) - _ISSUER_KEYS)
        if unknown:
            raise ConfigurationError(
                f"{origin}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_ISSUER_KEYS))}"
            )
        issuer, jwks_url, domain = (entry.get(name) for name in ("issuer", "jwks_url", "domain"))
        if not (isinstance(issuer, str) and isinstance(jwks_url, str) and isinstance(domain, str)):
            raise ConfigurationError(f"{origin}: issuer, jwks_url and domain are required text")
        if issuer == ISSUER or any(t.issuer == issuer for t in found):
            raise ConfigurationError(f"{origin}: issuer {issuer!r} is authmw's own or listed twice")
        if known is not None and domain not in known:
            raise ConfigurationError(f"{origin}: no domain {domain!r} in the store")
        if "audience" not in entry:
            raise ConfigurationError(
                f"{origin}: audience is required (the client id the tokens are issued to); audience: null accepts "
                "tokens issued to any client of the issuer"
            )
        if entry["audience"] is None:
            logger.warning("%s: no audience: tokens issued to any client of %s are accepted", origin, issuer)
        algorithms = entry.get("algorithms", ["RS256"])
        if not isinstance(algorithms, list):
            raise ConfigurationError(f"{origin}: algorithms must be a list")
        try:
            keys = JwksKeys(
                url=jwks_url,
                algorithms=algorithms,
                fetch=fetch,
                grace=float(entry.get("grace", 3600)),
                min_refetch=float(entry.get("min_refetch", 30)),
                timer=timer,
            )
            verifier = OidcIssuer(
                issuer=issuer,
                audience=entry.get("audience"),
                algorithms=algorithms,
                user_claim=entry.get("user_claim", "sub"),
                clock=clock,
                keys=keys,
            )
        except (TypeError, ValueError, ConfigurationError) as exc:  # a number or text of the wrong kind, too
            raise ConfigurationError(f"{origin}: {exc}") from None
        found.append(TrustedIssuer(issuer, domain, verifier))
        key_sets.append(keys)
    _prime(key_sets)
    return found


def _prime(key_sets: list[JwksKeys], timeout: float = 5.0) -> None:
    """Fetch every issuer's keys at start-up, in parallel and for at most ``timeout`` seconds in all, so the first
    requests find them (requests never wait for a fetch); an issuer that does not answer is logged, not fatal."""
    for keys in key_sets:
        keys.prime(0)  # starts each fetch
    deadline = time.monotonic() + timeout
    for keys in key_sets:
        if not keys.prime(max(0.0, deadline - time.monotonic())):
            logger.warning("the JWKS at %s could not be fetched at start-up: its tokens get 503 until it is", keys.url)


def replay_guard_of(settings: Settings, state: SharedState | None = None) -> ReplayGuardLike | bool:
    """The replay window ``settings`` ask for (False: none): the shared state's when there is one (a request
    accepted by one process is refused by all), else one in this process's memory (a replay sent to another
    worker or instance is not caught)."""
    if not settings.replay_protection:
        logger.warning("replay_protection is off: a captured signed request can be replayed within max_skew")
        return False
    if state is not None:
        return state
    return ReplayGuard(capacity=settings.replay_capacity, quota=settings.replay_quota)


def token_limits(settings: Settings) -> tuple[AttemptLimiter, MintLimiter]:
    """The login and security-token limits of the token endpoints, in the shared state when there is one (global
    limits), else in the process. Keep them for the life of the process: a reload must not reset the counters."""
    state = shared_state(settings)
    return AttemptLimiter(windows=state), MintLimiter(per_caller=settings.security_token_limit, windows=state)


def token_service(
    settings: Settings, store: Store, guard: Guard, limiter: AttemptLimiter, minter: MintLimiter
) -> TokenService | None:
    """The token endpoints of a server built on ``guard`` (None when it takes no IAM tokens), signing with the store's
    key for ``token_algorithm`` (a store without one is a configuration error either way)."""
    try:
        token_key = store.token_signing_key(settings.token_algorithm)
    except ChangeRefused as exc:
        raise ConfigurationError(f"token_algorithm: {exc}") from None
    if guard.tokens is None:
        return None
    signer = TokenSigner(*token_key, algorithm=settings.token_algorithm)
    return TokenService(store, signer, guard, limiter=limiter, minter=minter)


def announce_changes(store: Store, notices: Notices) -> None:
    """Make every change written through ``store`` publish the store's new revision to ``notices``, so that every
    process sharing them drops its caches at once rather than at its next poll."""
    if not isinstance(store.db, _Announcing):
        store.db = _Announcing(store.db, notices)


class _Announcing:
    """A store's database that publishes the revision after each committed write that moved it."""

    def __init__(self, db: Any, notices: Notices) -> None:
        self._db, self._notices = db, notices

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    @contextmanager
    def write(self, *, bump: bool = True) -> Iterator[Any]:
        with self._db.write(bump=bump) as tx:
            yield tx
        if bump:
            try:
                row = self._db.query("SELECT value FROM authmw_meta WHERE name = 'revision'")
            except Exception:  # the change is committed; polling finds it
                return
            self._notices.publish(int(row[0]) if row else 0)


def keep_replay_window(old: Guard, new: Guard) -> None:
    """A rebuilt guard (SIGHUP) keeps the requests the old one accepted, resized to the new settings: a fresh
    guard would accept each of them once more."""
    previous, fresh = old.verifier.replay_guard, new.verifier.replay_guard
    if isinstance(previous, ReplayGuard) and isinstance(fresh, ReplayGuard):
        previous.resize(capacity=fresh.capacity, quota=fresh.quota)
        previous.shift(new.verifier.max_skew - old.verifier.max_skew)  # requests expire with the new skew
        new.verifier.replay_guard = previous


def _build(settings: Settings, store: Store, routes: tuple[Route, ...]) -> Guard:
    """A guard over a cached view of ``store``, configured by ``settings``."""
    identity = CachedIdentity(store, deadline=settings.store_timeout / 1000, grace=settings.store_grace)
    state = shared_state(settings)
    if state is not None:
        state.subscribe(identity.poll)  # a change notice: read the revision now, not at the next poll
        announce_changes(store, state)
    verifier = Verifier(
        keys=identity,
        max_body=settings.max_body,
        max_skew=settings.max_skew,
        allow_unsigned_payload=settings.allow_unsigned_payload,
        signed_if_present=SIGNED_IF_PRESENT,
        replay_guard=replay_guard_of(settings, state),
        # Temporary credentials: security tokens sealed by any process sharing the store (rotations found).
        security_tokens=session_sealer(store, identity),
    )
    guard = Guard(
        identity=identity,
        verifier=verifier,
        # The store's signing keys; a kid rotated in elsewhere is found by a reload (rate-limited).
        tokens=TokenVerifier(  # the algorithms come from the configuration only, never from a token
            store.public_token_keys(settings.token_algorithms),
            algorithms=settings.token_algorithms,
            refresh=lambda: identity.ask(store.public_token_keys, settings.token_algorithms),
            revision=identity.current_revision,
        ),
        issuers=trusted_issuers(settings, domains=[d.name for d in store.list_domains()]),
        routes=routes_of(settings, routes),
        actions=modelarts_actions() if "modelarts" in presets_in_force(settings, tuple(routes)) else (),
        trusted_proxies=settings.trusted_proxies,
        forwarded_header=settings.forwarded_header,
        mode=settings.mode,
        strict_paths=settings.strict_paths,
        default_allow_without_policies=settings.default_allow_without_policies,
        max_json_body=settings.max_json_body,
        key_used=identity.key_used,
    )
    if guard.proxies.trusts_everything:
        logger.warning("trusted_proxies admits every address: any client can choose its own source address")
    if guard.mode == "dry-run":
        logger.warning("dry-run mode: requests are decided and logged but never refused")
    return guard
