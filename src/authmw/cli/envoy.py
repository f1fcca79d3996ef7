"""``authmw authz`` (Envoy's external authorization service) and ``authmw envoy-config`` (its Envoy bootstrap)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any, TextIO

from authmw.cli._common import EXIT_OK, UsageError, add_common, add_shared_state, settings_of, with_flags
from authmw.errors import ConfigurationError
from authmw.extras import requires
from authmw.settings import Settings, load_settings

__all__ = ["COMMANDS"]


def _authz(args: argparse.Namespace, _stdin: TextIO, _stdout: TextIO) -> int:
    with requires("envoy", "authmw authz"):
        return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    from authmw.cli._common import open_cli_store
    from authmw.envoy.server import build_authz, serve_authz

    changes: dict[str, Any] = {}
    if args.listen:
        changes["listen"] = args.listen
    if args.audit_log:
        changes["audit_log"] = args.audit_log
    settings = replace(settings_of(args), **changes)
    config = getattr(args, "config", None)

    def reload_settings() -> Settings:
        return with_flags(load_settings(config) if config else Settings(), args)

    with open_cli_store(args) as store:
        store.require_schema()
        build_authz(settings, store)  # refuse a bad configuration before binding the port
        serve_authz(settings, store, reload_settings=reload_settings)
    return EXIT_OK


def _envoy_config(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with requires("envoy", "authmw envoy-config"):
        from authmw.envoy.bootstrap import bootstrap, render

        try:
            config = bootstrap(listen=args.listen, upstream=args.upstream, authz=args.authz, body_limit=args.body_limit)
        except ConfigurationError as exc:
            raise UsageError(str(exc)) from None
        text = render(config)
    stdout.write(text)
    return EXIT_OK


def _add_authz(commands: Any) -> None:
    authz = commands.add_parser(
        "authz",
        help="answer Envoy's HTTP external authorization checks",
        description=(
            "Serve Envoy's HTTP ext_authz protocol (checks under /ext_authz/, as `authmw envoy-config` sets it up): "
            "an allowed request gets 200 with the X-Authmw-* identity headers and a signed X-Authmw-Assertion for "
            "Envoy to send upstream, a refused one the JSON error (docs/errors.md) for Envoy to send to the client. "
            "Also serves the token and security-token endpoints, /healthz, /readyz, /metrics and "
            "/.well-known/jwks.json. Put Envoy's address in trusted_proxies: the client address is read from the "
            "X-Forwarded-For Envoy appends to. SIGHUP reloads --config; SIGTERM answers the checks in flight and stops."
        ),
    )
    authz.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default 127.0.0.1:8080)")
    authz.add_argument("--audit-log", metavar="FILE", help="audit log file, - for stderr (default)")
    add_shared_state(authz)
    add_common(authz, formats=("text",))
    authz.set_defaults(handler=_authz)


def _add_envoy_config(commands: Any) -> None:
    envoy = commands.add_parser(
        "envoy-config",
        help="print an Envoy bootstrap that asks `authmw authz` about every request",
        description=(
            "Print a complete Envoy v3 bootstrap (YAML): a listener on --listen whose requests are checked by the "
            "authmw authz at --authz (body included, up to --body-limit bytes; fail closed) and, when allowed, sent "
            "to --upstream with the X-Authmw-* headers; client-sent X-Authmw-* headers are removed; the token "
            "endpoints are routed to authmw. Run it with `envoy -c FILE`."
        ),
    )
    envoy.add_argument("--listen", metavar="HOST:PORT", required=True, help="where Envoy listens")
    envoy.add_argument("--upstream", metavar="URL", required=True, help="where allowed requests go")
    envoy.add_argument("--authz", metavar="URL", required=True, help="the `authmw authz` service, http://HOST:PORT")
    envoy.add_argument(
        "--body-limit",
        metavar="N",
        type=int,
        default=Settings().max_body,
        help="largest request body checked, in bytes (larger: 413; default: max_body's default)",
    )
    envoy.set_defaults(handler=_envoy_config)


#: The commands this module adds, each with the function adding its parser.
COMMANDS = {"authz": _add_authz, "envoy-config": _add_envoy_config}
