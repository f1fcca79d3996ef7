"""Running the sidecar: uvicorn serving :class:`ProxyApp`, audit log, graceful shutdown, SIGHUP reload."""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from authmw.admission import BodyBudget
from authmw.assembly import keep_replay_window, open_guard, presets_in_force, token_limits, token_service
from authmw.auditlog import audit_to, close_audit, records_lost
from authmw.errors import (
    AddressInUse,
    AuthmwError,
    ChangeRefused,
    ConfigurationError,
    RequestTimeout,
    StoreUnavailable,
    render,
)
from authmw.guard import Guard
from authmw.iam_admin import IamAdmin
from authmw.iam_api import AttemptLimiter, MintLimiter, TokenService
from authmw.proxy.app import ProxyApp, UpstreamLimits
from authmw.settings import Settings
from authmw.store import Store
from authmw.store.database import StoreTimeouts
from authmw.store.redisstate import RedisState, shared_state
from authmw.tokens import PrivateKey, PublicKey, TokenSigner, algorithm_of
from authmw.workspace_api import WorkspaceService

__all__ = [
    "KeySet",
    "bind",
    "build_app",
    "header_deadline_protocol",
    "loop_factory",
    "parse_listen",
    "read_keys",
    "reload_on_hangup",
    "serve",
    "store_timeouts",
    "take_keys",
    "upstream_limits",
    "waiting_app",
]

#: Seconds between two looks at the store revision and the configuration file (a rotation or a changed file
#: elsewhere is taken up within this, plus the store's own ``refresh``).
WATCH_EVERY = 0.25

logger = logging.getLogger("authmw.proxy")


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) → (host, port)."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigurationError(f"--listen wants HOST:PORT, got {text!r}")
    return host, int(port)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket on ``host:port``, bound before the server starts, so that an address another process
    holds is told apart (:class:`~authmw.errors.AddressInUse`) from any other failure to listen."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not SO_REUSEPORT: never share a live port
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse(host, port) from None
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def upstream_limits(settings: Settings) -> UpstreamLimits:
    """The upstream client's pools and timeouts configured by ``settings``."""
    return UpstreamLimits(
        pools=settings.upstream_pools,
        connections=settings.upstream_pool_connections,
        connect=settings.upstream_connect_timeout / 1000,
        read=float(settings.upstream_timeout),
        write=float(settings.upstream_timeout),
        pool=settings.upstream_pool_timeout / 1000,
    )


def store_timeouts(settings: Settings) -> StoreTimeouts:
    """How long the proxy waits on its PostgreSQL store, as ``settings`` say."""
    return StoreTimeouts(
        pool=settings.store_timeout / 1000,
        statement=settings.store_statement_timeout / 1000,
        connect=settings.store_connect_timeout,
        keepalive=settings.store_keepalive,
        pool_size=settings.store_pool_size,
    )


def waiting_app(settings: Settings) -> ProxyApp:
    """The proxy before its store first answered: every request 503 ``store_unavailable``, ``/readyz`` 503."""
    if not settings.upstream:
        raise ConfigurationError("the proxy needs an upstream URL (--upstream or upstream: in the config)")
    try:
        return ProxyApp(guard=None, upstream=settings.upstream, signing_key=None, public_keys={},
                        limits=upstream_limits(settings))  # fmt: skip
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class KeySet:
    """The store's keys as a proxy uses them, read at ``revision``: the assertion key, the published key set,
    the token signer, and the sealing keys of temporary credentials."""

    revision: int
    signing_key: tuple[str, ed25519.Ed25519PrivateKey]
    public_keys: Mapping[str, PublicKey]
    token_key: tuple[str, PrivateKey]
    sealing_keys: tuple[Mapping[str, bytes], str]


def read_keys(settings: Settings, store: Store) -> KeySet:
    """The store's current keys (blocking: call off the event loop). The revision is read first, so a rotation
    committed meanwhile is read again by the next check."""
    revision = store.revision()
    try:
        token_key = store.token_signing_key(settings.token_algorithm)
    except ChangeRefused as exc:
        raise ConfigurationError(f"token_algorithm: {exc}") from None
    return KeySet(revision, store.signing_key(), store.public_token_keys(), token_key, store.sealing_keys())


def take_keys(app: ProxyApp, keys: KeySet, settings: Settings) -> None:
    """Serve with ``keys`` from now on: assertions, ``/.well-known/jwks.json``, issued tokens, sealed credentials
    and the key set tokens are verified with (so every instance sharing the store publishes the same keys)."""
    app.set_keys(keys.signing_key, keys.public_keys)
    service = app.token_service
    if isinstance(service, TokenService):
        service.signer = TokenSigner(*keys.token_key, algorithm=settings.token_algorithm)
        if service.sealer is not None:
            service.sealer.update(*keys.sealing_keys)
    if app.guard is not None and app.guard.tokens is not None:
        wanted = set(settings.token_algorithms)
        app.guard.tokens.update({kid: key for kid, key in keys.public_keys.items() if algorithm_of(key) in wanted})


def build_app(
    settings: Settings,
    store: Store,
    *,
    limiter: AttemptLimiter | None = None,
    minter: MintLimiter | None = None,
) -> ProxyApp:
    """The proxy app over ``store`` configured by ``settings`` (the upstream is required); its token service
    counts login attempts with ``limiter`` and security tokens with ``minter`` (new ones if None: pass the
    running ones on a reload)."""
    if not settings.upstream:
        raise ConfigurationError("the proxy needs an upstream URL (--upstream or upstream: in the config)")
    store.check_keyring()  # a store that was down at start-up had its master key ring checked by nobody yet
    guard = open_guard(store, config=settings)
    signing_key = store.signing_key()
    if limiter is None or minter is None:  # one given (a test's, say) is kept
        fresh_limiter, fresh_minter = token_limits(settings)
        limiter, minter = limiter or fresh_limiter, minter or fresh_minter
    tokens = token_service(settings, store, guard, limiter, minter)
    service = IamAdmin(store, guard, tokens=tokens, limiter=limiter)  # the IAM API: tokens and administration
    serve_workspaces = settings.serve_workspaces and "modelarts" in presets_in_force(settings)
    try:
        app = ProxyApp(
            guard=guard,
            upstream=settings.upstream,
            signing_key=signing_key,
            public_keys=store.public_token_keys(),
            assertion_ttl=settings.assertion_ttl,
            assertion_audience=settings.assertion_audience,
            token_service=service,
            workspace_service=WorkspaceService(store) if serve_workspaces else None,
            forward_credentials=settings.forward_credentials,
            allowed_actions_header=settings.allowed_actions_header,
            drop_underscore_headers=settings.drop_underscore_headers,
            body_timeout=settings.body_timeout,
            body_budget=BodyBudget(settings.body_budget),
            limits=upstream_limits(settings),
        )
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    state = shared_state(settings)
    app.metrics.watch(records_lost, (lambda: state.fallbacks) if isinstance(state, RedisState) else None)
    return app


def header_deadline_protocol(header_timeout: float, http: str | None = None) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol (``http``: ``"httptools"`` or ``"h11"``; None: httptools where it is
    installed, else h11), with a deadline for each request's head: uvicorn has none (``timeout_keep_alive`` only
    runs between requests, and any byte stops it), so a client dripping a head held its connection forever.
    A head not complete ``header_timeout`` seconds after the connection opened (or the previous response ended)
    gets 408 ``request_timeout`` and the connection is closed; an idle connection is closed without a word. Pass
    it as ``uvicorn.Config(http=...)``."""
    if http is None:
        http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    status, headers, body = render(RequestTimeout("the request head did not arrive in time"), "")
    head = b"".join(f"{name}: {value}\r\n".encode() for name, value in headers if value)  # no request id: no request
    answer = b"HTTP/1.1 408 Request Timeout\r\n" + head + b"connection: close\r\n\r\n" + body
    assert status == 408
    if http == "h11":
        return _h11_deadline(header_timeout, answer)
    if http == "httptools":
        return _httptools_deadline(header_timeout, answer)
    raise ConfigurationError(f"no HTTP protocol {http!r}: httptools or h11")


def _h11_deadline(header_timeout: float, answer: bytes) -> type[asyncio.Protocol]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # the next request's head has its own deadline

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_timer = self.loop.call_later(header_timeout, self._expired)

        def _expired(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return  # a head arrived: the body has its own deadline (the app's)
            if self.cycle is not None and not self.cycle.response_complete:
                return
            if self.conn.trailing_data[0]:  # part of a head: say why before hanging up
                self.transport.write(answer)
            self.transport.close()

    return HeaderDeadline


def _httptools_deadline(header_timeout: float, answer: bytes) -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeaderDeadline(HttpToolsProtocol):
        """The same deadline on httptools, which parses a pipelined head as soon as it arrives (h11 waits for
        the response before it): what tells a head is pending is the parser's begin/headers-complete callbacks."""

        _head_timer: asyncio.TimerHandle | None = None
        _head_pending = False  # a request's first byte has arrived, its head is not complete

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_pending = True

        def on_headers_complete(self) -> None:
            self._head_pending = False
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # the next request's head has its own deadline

        def handle_websocket_upgrade(self) -> None:
            self._disarm()  # the websocket protocol takes the connection over: no head to wait for
            super().handle_websocket_upgrade()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(header_timeout, self._expired)

        def _expired(self) -> None:
            self._head_timer = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a request is being answered (its body has the app's deadline): re-armed when it ends
            if self._head_pending:  # part of a head: say why before hanging up
                self.transport.write(answer)
            self.transport.close()

    return HeaderDeadline


def keep_issuers(old: Guard, new: Guard, before: Settings, after: Settings) -> None:
    """External issuers configured as before keep their key sets across a reload (and so their last good keys and
    grace period while the issuer is down)."""
    previous = {entry.get("issuer"): entry for entry in before.token_issuers}
    for entry in after.token_issuers:
        issuer = entry.get("issuer")
        if isinstance(issuer, str) and previous.get(issuer) == entry and issuer in old.issuers:
            new.issuers[issuer] = old.issuers[issuer]


def _stamp(path: str | None) -> tuple[int, int, int] | None:
    """What tells a configuration file changed (a Kubernetes ConfigMap update swaps the file under a symlink)."""
    if path is None:
        return None
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns, found.st_size


def serve(
    settings: Settings,
    store: Store,
    *,
    reload_settings: Callable[[], Settings] | None = None,
    listening: socket.socket | None = None,
    config_file: str | None = None,
    wait_for_store: bool = False,
) -> None:
    """Serve until SIGINT/SIGTERM (in-flight requests finish first); SIGHUP rebuilds the guard from
    ``reload_settings()`` (and takes up the store's current signing key) and drops every cache, without dropping
    a request. A reload that fails keeps the old configuration and logs why. ``listening``: a socket bound
    already (shared by several worker processes), else ``settings.listen`` is bound here.

    Every :data:`WATCH_EVERY` seconds, without a signal: a changed ``config_file`` is reloaded as on SIGHUP, and
    when the store revision moved the keys are read again (a signing- or sealing-key rotation made on any
    instance, so all publish the same key set). With ``wait_for_store``, a store that does not answer at the
    start is waited for (503 to every request, ``/readyz`` 503) instead of being fatal.
    """
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per forwarded request is the audit log's job
    audit_to(settings.audit_log)
    limiter, minter = token_limits(settings)  # one each for the process: a reload must not reset them
    try:
        app = build_app(settings, store, limiter=limiter, minter=minter)
    except StoreUnavailable as exc:
        if not wait_for_store:
            raise
        logger.warning("the store does not answer (%s): not ready until it does", exc.detail)
        app = waiting_app(settings)
    host, port = parse_listen(settings.listen)
    if listening is None:
        listening = bind(host, port)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        proxy_headers=False,  # the guard decides which forwarding headers to believe (trusted_proxies)
        server_header=False,
        log_level="warning",
        timeout_graceful_shutdown=30,
        http=header_deadline_protocol(settings.header_timeout),  # httptools where installed, else h11
        limit_concurrency=settings.max_connections,  # beyond it uvicorn answers 503 at once
        backlog=min(2048, settings.max_connections),
    )
    server = uvicorn.Server(config)

    running = [settings]  # the settings in force
    keys_at = [-1 if app.guard is None else _revision_of(app.guard)]  # the revision the keys were read at
    reloading = asyncio.Lock()

    def rebuild() -> tuple[Settings, ProxyApp]:
        fresh = reload_settings() if reload_settings is not None else settings
        fresh = replace(fresh, upstream=fresh.upstream or settings.upstream, listen=settings.listen)
        rebuilt = build_app(fresh, store, limiter=limiter, minter=minter)  # also the signing key and the key set
        assert rebuilt.guard is not None
        rebuilt.guard.identity.poll()  # type: ignore[attr-defined]
        if app.guard is not None:
            keep_issuers(app.guard, rebuilt.guard, running[0], fresh)
            keep_replay_window(app.guard, rebuilt.guard)
        return fresh, rebuilt

    async def reload(*, quiet: bool = False) -> bool:
        async with reloading:  # one at a time, built off the event loop (it reads the store, fetches JWKS)
            try:
                fresh, rebuilt = await asyncio.to_thread(rebuild)
            except Exception as exc:
                if not quiet:
                    app.metrics.reloads.labels("failed").inc()
                    logger.error("reload failed, keeping the running configuration: %s", exc)
                return False
            assert rebuilt.guard is not None
            keys_at[0] = _revision_of(rebuilt.guard)
            app.reload(rebuilt)
            running[0] = fresh
            app.metrics.reloads.labels("ok").inc()
            logger.info("configuration and policies reloaded")
            return True

    async def watch() -> None:
        """Take up, without a signal, what changed elsewhere: the configuration file, the store's keys; and the
        store itself when it did not answer at the start."""
        stamp = pending = _stamp(config_file)
        while True:
            await asyncio.sleep(WATCH_EVERY)
            if app.guard is None:
                await reload(quiet=True)  # the store's first answer: built as on SIGHUP
                continue
            seen = _stamp(config_file)
            if seen != stamp:
                # A file written in place is truncated first: an empty file, or one still changing, is not taken
                # up (the empty one would load as the defaults); it is once it has settled for one interval.
                if seen != pending or (seen is not None and seen[2] == 0):
                    pending = seen
                    continue
                stamp = seen  # once per change: a broken file is logged once, and kept out until changed again
                await reload()
                continue
            identity: Any = app.guard.identity
            try:
                revision = await asyncio.to_thread(identity.current_revision)
                if revision != keys_at[0]:
                    keys = await asyncio.to_thread(read_keys, running[0], store)
                    take_keys(app, keys, running[0])
                    keys_at[0] = keys.revision
            except AuthmwError:
                continue  # the store is down: what is cached is served within the grace; looked at again next time

    # uvicorn drains on SIGINT/SIGTERM, then re-raises the signal to the handler it found: make that one stop the
    # server (a no-op once drained), so a drained shutdown ends with exit status 0 instead of death by signal, and a
    # signal that comes before uvicorn's handler is in place (a worker still starting) stops it too, not lost.
    def stop_soon(_signum: int, _frame: Any) -> None:
        server.should_exit = True

    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, stop_soon)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        reload_on_hangup(loop, reload)
        watcher = loop.create_task(watch())
        logger.info("authmw proxy on http://%s:%d → %s (mode %s)", host, port, settings.upstream, settings.mode)
        try:
            await server.serve(sockets=[listening])
        finally:
            watcher.cancel()

    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(main())
    finally:
        close_audit()  # drained: every record written (a worker ends with os._exit, which runs no atexit)
        listening.close()


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (not on Windows), else asyncio's (None): the proxy's and authz's
    servers run on it."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def reload_on_hangup(loop: asyncio.AbstractEventLoop, reload: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """SIGHUP runs ``reload()`` as a task of ``loop`` (the proxy's and authz's one way to reload on a signal)."""
    tasks: set[asyncio.Task[Any]] = set()

    def on_hangup() -> None:
        task = loop.create_task(reload())
        tasks.add(task)  # kept until done: the loop holds tasks only weakly
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hangup)


def _revision_of(guard: Guard) -> int:
    """The store revision ``guard``'s caches reflect (what its keys were read at, when it was just built)."""
    return int(getattr(guard.identity, "revision", -1))
