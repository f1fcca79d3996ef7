"""Running the decision service: :mod:`authmw.envoy.wire` (httptools on uvloop) serving :class:`AuthzApp`, audit
log, drain.

Only Envoy talks to it, over a few long-lived keep-alive connections, one small check after another: the cost
that matters is CPU per decision. Measured (allowed AK/SK check, audit on, wrk over 8 connections): 287 µs per
decision on uvicorn with uvloop and httptools against 434 µs on asyncio and h11; and then (wrk at 32 connections,
interleaved, a loaded machine) 16% less on a server of our own over the same httptools and uvloop, most of it
uvicorn's validation of each header it writes (the identity headers run to 4 KiB: allowed actions, assertion) and
its per-message bookkeeping. No head deadline (the sidecar's :func:`~authmw.proxy.server.header_deadline_protocol`
would also close Envoy's idle pooled connections at ``header_timeout``): the service is for Envoy alone, on an
address clients cannot reach.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
from collections.abc import Callable
from dataclasses import replace

from authmw.admission import BodyBudget
from authmw.assembly import keep_replay_window, open_guard, token_limits, token_service
from authmw.auditlog import audit_to, close_audit, records_lost
from authmw.envoy.app import CHECK_PREFIX, AuthzApp
from authmw.envoy.wire import serve_http
from authmw.errors import AddressInUse, ConfigurationError
from authmw.iam_api import AttemptLimiter, MintLimiter
from authmw.proxy.app import origin_of
from authmw.proxy.server import keep_issuers, loop_factory, parse_listen, reload_on_hangup
from authmw.settings import Settings
from authmw.store import Store
from authmw.store.redisstate import RedisState, shared_state

__all__ = ["build_authz", "serve_authz"]

logger = logging.getLogger("authmw.authz")


def build_authz(
    settings: Settings,
    store: Store,
    *,
    limiter: AttemptLimiter | None = None,
    minter: MintLimiter | None = None,
) -> AuthzApp:
    """The ``authz`` app over ``store`` configured by ``settings``: assertions are addressed to
    ``assertion_audience``, else to the origin of ``upstream`` (none when neither is configured); its token service
    counts login attempts with ``limiter`` and security tokens with ``minter`` (new ones if None: pass the running
    ones on a reload)."""
    if settings.forwarded_header != "x-forwarded-for":  # the other chain would be the client's own words
        raise ConfigurationError(
            "authz reads the X-Forwarded-For Envoy appends to: forwarded_header must be x-forwarded-for"
        )
    guard = open_guard(store, config=settings)
    if limiter is None or minter is None:  # one given (a test's, say) is kept
        fresh_limiter, fresh_minter = token_limits(settings)
        limiter, minter = limiter or fresh_limiter, minter or fresh_minter
    service = token_service(settings, store, guard, limiter, minter)
    audience = settings.assertion_audience or (origin_of(settings.upstream) if settings.upstream else None)
    return AuthzApp(
        guard=guard,
        signing_key=store.signing_key(),
        public_keys=store.public_token_keys(),
        assertion_ttl=settings.assertion_ttl,
        assertion_audience=audience,
        token_service=service,
        forward_credentials=settings.forward_credentials,
        allowed_actions_header=settings.allowed_actions_header,
        body_timeout=settings.body_timeout,
        body_budget=BodyBudget(settings.body_budget),
    )


def serve_authz(settings: Settings, store: Store, *, reload_settings: Callable[[], Settings] | None = None) -> None:
    """Serve until SIGINT/SIGTERM (checks in flight are answered first); SIGHUP rebuilds the guard from
    ``reload_settings()`` (and takes up the store's current signing key) without dropping a check, or keeps the
    running configuration and logs why."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    audit_to(settings.audit_log)
    limiter, minter = token_limits(settings)  # one each for the process: a reload must not reset them
    app = build_authz(settings, store, limiter=limiter, minter=minter)
    state = shared_state(settings)
    app.metrics.watch(records_lost, (lambda: state.fallbacks) if isinstance(state, RedisState) else None)
    if not app.guard.proxies.networks:
        logger.warning(
            "trusted_proxies is empty: every client address is Envoy's; add Envoy's address to trusted_proxies"
        )
    if app.assertion_audience is None:
        logger.warning("assertions name no audience: set assertion_audience (or upstream) in the configuration")
    host, port = parse_listen(settings.listen)
    running = [settings]
    reloading = asyncio.Lock()

    def rebuild() -> tuple[Settings, AuthzApp]:
        fresh = reload_settings() if reload_settings is not None else settings
        fresh = replace(fresh, listen=settings.listen, audit_log=settings.audit_log)
        rebuilt = build_authz(fresh, store, limiter=limiter, minter=minter)  # also the signing key and the key set
        rebuilt.guard.identity.poll()  # type: ignore[attr-defined]
        keep_issuers(app.guard, rebuilt.guard, running[0], fresh)
        keep_replay_window(app.guard, rebuilt.guard)
        return fresh, rebuilt

    async def reload() -> None:
        async with reloading:  # one at a time, built off the event loop (it reads the store, fetches JWKS)
            try:
                fresh, rebuilt = await asyncio.to_thread(rebuild)
            except Exception as exc:
                app.metrics.reloads.labels("failed").inc()
                logger.error("reload failed, keeping the running configuration: %s", exc)
                return
            app.reload(rebuilt)
            running[0] = fresh
            app.metrics.reloads.labels("ok").inc()
            logger.info("configuration and policies reloaded")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        reload_on_hangup(loop, reload)
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):  # drain: checks in flight are answered, then exit 0
            loop.add_signal_handler(signum, stop.set)
        logger.info("authmw authz on http://%s:%d (checks under %s/)", host, port, CHECK_PREFIX)
        await serve_http(
            app,
            host=host,
            port=port,
            stop=stop,
            max_connections=settings.max_connections,
            backlog=min(2048, settings.max_connections),
            keep_alive=300.0,  # Envoy keeps its connections to the service open: no reason to drop them
            drain=30.0,
        )

    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            try:
                runner.run(main())
            except OSError as exc:  # the address is taken (exit 5, as the proxy's), or not ours (exit 2)
                if exc.errno == errno.EADDRINUSE:
                    raise AddressInUse(host, port) from None
                raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    finally:
        close_audit()  # drained: every record written
