"""Running the decision service: uvicorn on uvloop and httptools serving :class:`AuthzApp`, audit log, drain.

Only Envoy talks to it, over a few long-lived keep-alive connections, one small check after another: the cost
that matters is CPU per decision, where uvloop and httptools take a third off uvicorn's default asyncio loop and
h11 parser (measured in the commit that chose them).
"""

from __future__ import annotations

import logging
import signal

from authmw.admission import BodyBudget
from authmw.assembly import open_guard
from authmw.envoy.app import CHECK_PREFIX, AuthzApp
from authmw.errors import ChangeRefused, ConfigurationError
from authmw.iam_api import AttemptLimiter, TokenService
from authmw.proxy.app import origin_of
from authmw.proxy.server import _audit_to, parse_listen
from authmw.settings import Settings
from authmw.store import Store
from authmw.tokens import TokenSigner

__all__ = ["build_authz", "serve_authz"]

logger = logging.getLogger("authmw.authz")


def build_authz(settings: Settings, store: Store) -> AuthzApp:
    """The ``authz`` app over ``store`` configured by ``settings``: assertions are addressed to
    ``assertion_audience``, else to the origin of ``upstream`` (none when neither is configured)."""
    guard = open_guard(store, config=settings)
    try:
        token_key = store.token_signing_key(settings.token_algorithm)
    except ChangeRefused as exc:
        raise ConfigurationError(f"token_algorithm: {exc}") from None
    signer = TokenSigner(*token_key, algorithm=settings.token_algorithm)
    service = None if guard.tokens is None else TokenService(store, signer, guard, limiter=AttemptLimiter())
    audience = settings.assertion_audience or (origin_of(settings.upstream) if settings.upstream else None)
    return AuthzApp(
        guard=guard,
        signing_key=store.signing_key(),
        public_keys=store.public_token_keys(),
        assertion_ttl=settings.assertion_ttl,
        assertion_audience=audience,
        token_service=service,
        forward_credentials=settings.forward_credentials,
        body_timeout=settings.body_timeout,
        body_budget=BodyBudget(settings.body_budget),
    )


def serve_authz(settings: Settings, store: Store) -> None:
    """Serve until SIGINT/SIGTERM (checks in flight are answered first)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    _audit_to(settings.audit_log)
    app = build_authz(settings, store)
    if not app.guard.proxies.networks:
        logger.warning(
            "trusted_proxies is empty: every client address is Envoy's; add Envoy's address to trusted_proxies"
        )
    if app.assertion_audience is None:
        logger.warning("assertions name no audience: set assertion_audience (or upstream) in the configuration")
    host, port = parse_listen(settings.listen)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        loop="uvloop",
        http="httptools",
        proxy_headers=False,  # the guard decides which forwarding headers to believe (trusted_proxies)
        server_header=False,
        date_header=False,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=30,
        timeout_keep_alive=300,  # Envoy keeps its connections to the service open: no reason to drop them
        limit_concurrency=settings.max_connections,
        backlog=min(2048, settings.max_connections),
    )
    server = uvicorn.Server(config)
    # uvicorn drains on SIGINT/SIGTERM, then re-raises the signal to the handler it found: make that one a
    # no-op, so a drained shutdown ends with exit status 0 instead of death by signal.
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, lambda _signum, _frame: None)
    logger.info("authmw authz on http://%s:%d (checks under %s/)", host, port, CHECK_PREFIX)
    server.run()
