"""``authmw proxy``: the sidecar reverse proxy."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import time
from contextlib import suppress
from dataclasses import replace
from typing import Any, TextIO

from authmw.cli._common import EXIT_OK, UsageError, add_common, add_shared_state, settings_of, with_flags
from authmw.extras import requires
from authmw.settings import Settings, load_settings

logger = logging.getLogger("authmw.proxy")
_STARTUP = 5.0  # seconds: a worker dying sooner could not start, and is not started again

__all__ = ["COMMANDS"]


def _settings(args: argparse.Namespace) -> Settings:
    settings = settings_of(args)
    changes: dict[str, Any] = {}
    if args.upstream:
        changes["upstream"] = args.upstream
    if args.listen:
        changes["listen"] = args.listen
    if args.dry_run:
        changes["mode"] = "dry-run"
    if args.audit_log:
        changes["audit_log"] = args.audit_log
    return replace(settings, **changes)


def _proxy(args: argparse.Namespace, _stdin: TextIO, _stdout: TextIO) -> int:
    with requires("proxy", "authmw proxy"):
        return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    from authmw.cli._common import open_cli_store
    from authmw.errors import StoreUnavailable
    from authmw.proxy.server import build_app, serve, store_timeouts, waiting_app

    settings = _settings(args)
    workers = args.workers
    if workers > 1 and not (settings.shared_state or os.environ.get("AUTHMW_SHARED_STATE")):
        raise UsageError(
            f"--workers {workers} needs shared state (--shared-state redis://HOST:PORT/DB, AUTHMW_SHARED_STATE or "
            "shared_state: in --config): without it each worker keeps its own replay window and limits, and a "
            "request replayed to another worker would be accepted"
        )
    config = getattr(args, "config", None)

    def reload_settings() -> Settings:
        fresh = with_flags(load_settings(config) if config else Settings(), args)
        return replace(
            fresh,
            upstream=args.upstream or fresh.upstream,
            mode="dry-run" if args.dry_run else fresh.mode,
            audit_log=settings.audit_log,
        )

    # A PostgreSQL server that does not answer yet is waited for (not ready meanwhile); a missing SQLite file is
    # still exit 3, since only 'authmw init' creates one.
    with open_cli_store(args, timeouts=store_timeouts(settings), lazy=True) as store:
        try:
            store.require_schema()
            build_app(settings, store)  # refuse a bad configuration before binding the port
        except StoreUnavailable:
            if store.db.dialect != "postgresql":
                raise
            waiting_app(settings)  # what can be checked without the store: the upstream
        if workers == 1:
            serve(
                settings,
                store,
                reload_settings=reload_settings,
                config_file=config,
                wait_for_store=store.db.dialect == "postgresql",
            )
            return EXIT_OK
    return _fork_workers(args, settings, workers, reload_settings)


def _fork_workers(args: argparse.Namespace, settings: Settings, workers: int, reload_settings: Any) -> int:
    """Bind once, then fork ``workers`` processes that each open their own store and shared-state connections
    and accept on the one socket (the kernel hands each connection to one of them). This process forwards
    SIGINT, SIGTERM and SIGHUP to them and starts a worker again if one dies while serving."""
    from authmw.cli._common import open_cli_store
    from authmw.proxy.server import bind, parse_listen, serve, store_timeouts
    from authmw.store.redisstate import close_shared_states

    close_shared_states()  # a child opens its own: connections and threads do not survive a fork
    listening = bind(*parse_listen(settings.listen))
    listening.listen(min(2048, settings.max_connections))  # connections queue while the workers start

    def start() -> int:
        pid = os.fork()
        if pid:
            return pid
        status = 4
        try:
            with open_cli_store(args, timeouts=store_timeouts(settings), lazy=True) as store:
                serve(
                    settings,
                    store,
                    reload_settings=reload_settings,
                    listening=listening,
                    config_file=getattr(args, "config", None),
                    wait_for_store=store.db.dialect == "postgresql",
                )
            status = EXIT_OK
        except BaseException:  # a child must never return into the parent's code
            logger.exception("worker %d failed", os.getpid())
        finally:
            os._exit(status)

    started = {start(): time.monotonic() for _ in range(workers)}
    children = set(started)
    stopping = [False]

    def forward(signum: int, _frame: Any) -> None:
        if signum != signal.SIGHUP:
            stopping[0] = True
        for pid in children:
            with suppress(ProcessLookupError):  # exited already
                os.kill(pid, signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    status = EXIT_OK
    while children:
        pid, code = os.wait()
        children.discard(pid)
        exit_code = os.waitstatus_to_exitcode(code)
        if stopping[0]:
            status = max(status, exit_code if exit_code > 0 else 0)
        elif time.monotonic() - started.pop(pid, 0.0) < _STARTUP:  # it could not start: neither will another
            logger.error("worker %d could not start (exit %d): stopping", pid, exit_code)
            status = exit_code if exit_code > 0 else 4
            forward(signal.SIGTERM, None)
        else:
            logger.error("worker %d stopped (exit %d): starting another", pid, exit_code)
            fresh = start()
            started[fresh] = time.monotonic()
            children.add(fresh)
    listening.close()
    return status


def _workers(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"expected a number of processes 1-64, got {text!r}")
    return int(text)


def _add_proxy(commands: Any) -> None:
    proxy = commands.add_parser(
        "proxy",
        help="run the sidecar reverse proxy in front of an upstream",
        description=(
            "Serve the authmw pipeline in front of UPSTREAM: every request is authenticated, placed in a workspace "
            "and authorized, then forwarded with X-Authmw-* identity headers and a signed X-Authmw-Assertion "
            "(incoming X-Authmw-* headers are dropped). Also serves /healthz, /readyz, /metrics and "
            "/.well-known/jwks.json. With no routes configured the built-in modelarts preset applies. SIGHUP, or a "
            "change to the --config file, reloads it; keys rotated in the store are taken up within a second. A "
            "PostgreSQL store that does not answer yet is waited for (not ready meanwhile). SIGTERM drains "
            "in-flight requests and stops."
        ),
    )
    proxy.add_argument("--upstream", metavar="URL", help="where allowed requests go (or upstream: in --config)")
    proxy.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default 127.0.0.1:8080)")
    proxy.add_argument("--dry-run", action="store_true", help="decide and log, but pass every request on")
    proxy.add_argument("--audit-log", metavar="FILE", help="audit log file, - for stderr (default)")
    proxy.add_argument(
        "--workers",
        metavar="N",
        type=_workers,
        default=1,
        help="serve from N processes sharing the listening socket (N > 1 needs --shared-state; default 1)",
    )
    add_shared_state(proxy)
    add_common(proxy, formats=("text",))
    proxy.set_defaults(handler=_proxy)


#: The command this module adds, with the function adding its parser.
COMMANDS = {"proxy": _add_proxy}
