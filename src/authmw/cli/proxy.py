"""``authmw proxy``: the sidecar reverse proxy (SPEC §8)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any, TextIO

from authmw.cli._common import EXIT_OK, add_common, settings_of
from authmw.extras import requires
from authmw.settings import Settings, load_settings

__all__ = ["register"]


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
        config = getattr(args, "config", None)

        def reload_settings() -> Settings:
            fresh = load_settings(config) if config else Settings()
            return replace(
                fresh,
                upstream=args.upstream or fresh.upstream,
                mode="dry-run" if args.dry_run else fresh.mode,
                audit_log=settings.audit_log,
            )

        serve(
            settings,
            store,
            reload_settings=reload_settings,
            config_file=config,
            wait_for_store=store.db.dialect == "postgresql",
        )
    return EXIT_OK


def register(commands: Any) -> None:
    """Add ``proxy`` to the command parsers."""
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
    add_common(proxy, formats=("text",))
    proxy.set_defaults(handler=_proxy)
