"""Running the sidecar: uvicorn serving :class:`ProxyApp`, audit log, graceful shutdown, SIGHUP reload."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import replace

from authmw.assembly import build_guard, keep_replay_window
from authmw.audit import AUDIT_LOGGER
from authmw.errors import ChangeRefused, ConfigurationError
from authmw.guard import Guard
from authmw.iam_api import TokenService
from authmw.proxy.app import ProxyApp
from authmw.settings import Settings
from authmw.store import Store
from authmw.tokens import TokenSigner

__all__ = ["build_app", "parse_listen", "serve"]

logger = logging.getLogger("authmw.proxy")


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) → (host, port)."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigurationError(f"--listen wants HOST:PORT, got {text!r}")
    return host, int(port)


def build_app(settings: Settings, store: Store) -> ProxyApp:
    """The proxy app over ``store`` configured by ``settings`` (the upstream is required)."""
    if not settings.upstream:
        raise ConfigurationError("the proxy needs an upstream URL (--upstream or upstream: in the config)")
    guard = build_guard(settings, store=store)
    signing_key = store.signing_key()
    try:
        token_key = store.token_signing_key(settings.token_algorithm)
    except ChangeRefused as exc:
        raise ConfigurationError(f"token_algorithm: {exc}") from None
    signer = TokenSigner(*token_key, algorithm=settings.token_algorithm)
    service = None if guard.tokens is None else TokenService(store, signer, guard)
    try:
        return ProxyApp(
            guard=guard,
            upstream=settings.upstream,
            signing_key=signing_key,
            public_keys=store.public_token_keys(),
            assertion_ttl=settings.assertion_ttl,
            token_service=service,
        )
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def keep_issuers(old: Guard, new: Guard, before: Settings, after: Settings) -> None:
    """External issuers configured as before keep their key sets across a reload (and so their last good keys and
    grace period while the issuer is down)."""
    previous = {entry.get("issuer"): entry for entry in before.token_issuers}
    for entry in after.token_issuers:
        issuer = entry.get("issuer")
        if isinstance(issuer, str) and previous.get(issuer) == entry and issuer in old.issuers:
            new.issuers[issuer] = old.issuers[issuer]


def _audit_to(target: str | None) -> None:
    """Audit records go to ``target`` (a file, or ``-`` for standard error), one JSON object per line."""
    if target is None:
        target = "-"
    handler = logging.StreamHandler(sys.stderr) if target == "-" else logging.FileHandler(target, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    AUDIT_LOGGER.handlers[:] = [handler]
    AUDIT_LOGGER.setLevel(logging.INFO)
    AUDIT_LOGGER.propagate = False


def serve(settings: Settings, store: Store, *, reload_settings: Callable[[], Settings] | None = None) -> None:
    """Serve until SIGINT/SIGTERM (in-flight requests finish first); SIGHUP rebuilds the guard from
    ``reload_settings()`` (and takes up the store's current signing key) and drops every cache, without dropping
    a request. A reload that fails keeps the old
    configuration and logs why."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per forwarded request is the audit log's job
    _audit_to(settings.audit_log)
    app = build_app(settings, store)
    host, port = parse_listen(settings.listen)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        proxy_headers=False,  # the guard decides which forwarding headers to believe (trusted_proxies)
        server_header=False,
        log_level="warning",
        timeout_graceful_shutdown=30,
    )
    server = uvicorn.Server(config)

    running = [settings]  # the settings in force
    reloading = asyncio.Lock()

    def rebuild() -> tuple[Settings, ProxyApp]:
        fresh = reload_settings() if reload_settings is not None else settings
        fresh = replace(fresh, upstream=fresh.upstream or settings.upstream, listen=settings.listen)
        rebuilt = build_app(fresh, store)  # also the current signing key and the key set
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

    # uvicorn drains on SIGINT/SIGTERM, then re-raises the signal to the handler it found: make that one a
    # no-op, so a drained shutdown ends with exit status 0 instead of death by signal.
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, lambda _signum, _frame: None)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()

        def on_hangup() -> None:
            task = loop.create_task(reload())
            tasks.add(task)  # kept until done: the loop holds tasks only weakly
            task.add_done_callback(tasks.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        logger.info("authmw proxy on http://%s:%d → %s (mode %s)", host, port, settings.upstream, settings.mode)
        await server.serve()

    asyncio.run(main())
