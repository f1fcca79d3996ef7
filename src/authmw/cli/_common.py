"""What every ``authmw`` command shares: exit codes, the parser class, global options, output."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from authmw.errors import ConfigurationError

if TYPE_CHECKING:
    from authmw.policy import Decision
    from authmw.settings import Settings

__all__ = [
    "EXIT_INTERNAL",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "Handler",
    "Parser",
    "UsageError",
    "add_common",
    "check_action",
    "decision_report",
    "emit",
    "open_cli_store",
    "parse_context",
    "settings_of",
]

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTERNAL = 0, 1, 2, 3, 4

Handler = Callable[[argparse.Namespace, TextIO, TextIO], int]


class UsageError(Exception):
    """Unusable input or a refused change: exit 2 with a one-line message."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def add_common(parser: argparse.ArgumentParser, *, formats: tuple[str, ...] = ("text", "json")) -> None:
    """The global options, accepted after the command too (``authmw user list --store URL``)."""
    parser.add_argument(
        "--store",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="store URL (env AUTHMW_STORE; default sqlite:///./authmw.db)",
    )
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="YAML configuration file")
    parser.add_argument("--format", choices=formats, default=formats[0], help="output format")


def settings_of(args: argparse.Namespace) -> Settings:
    from authmw.settings import load_settings  # on use: `ssh authorized-keys` must start fast and needs none

    try:
        return load_settings(getattr(args, "config", None))
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


@contextmanager
def open_cli_store(args: argparse.Namespace, *, create_master_key: bool = False) -> Iterator[Any]:
    """The store named by ``--store`` / ``$AUTHMW_STORE`` / the config file / the default, closed afterwards."""
    from authmw.store import STORE_ENV, open_store
    from authmw.store.secrets import MASTER_KEY_FILE_ENV

    settings = settings_of(args)
    environ = dict(os.environ)
    if settings.master_key_file and not environ.get(MASTER_KEY_FILE_ENV):
        environ[MASTER_KEY_FILE_ENV] = settings.master_key_file
    url = getattr(args, "store", None) or environ.get(STORE_ENV) or settings.store
    store = open_store(
        url, create_master_key=create_master_key, whitelist_limit=settings.whitelist_limit, environ=environ
    )
    try:
        yield store
    finally:
        store.close()


def parse_context(text: str | None) -> dict[str, Any]:
    """``--context``: a JSON object of strings, numbers, booleans or lists of them, keyed by condition key."""
    if not text:
        return {}
    try:
        context = json.loads(text)
    except ValueError:
        raise UsageError("--context: not valid JSON") from None
    if not isinstance(context, dict) or not all(_context_value(v) for v in context.values()):
        raise UsageError("--context: a JSON object of strings, numbers, booleans or lists of them")
    return context


def _context_value(value: object) -> bool:
    if isinstance(value, list):
        return all(isinstance(item, str | int | float | bool) for item in value)
    return isinstance(value, str | int | float | bool)


def check_action(action: str) -> str:
    if action.count(":") != 2:
        raise UsageError("--action: expected service:resourceType:operation")
    return action


def decision_report(decision: Decision) -> dict[str, Any]:
    """The SPEC §5 decision JSON: decision, explicit, statement, reason."""
    return {
        "decision": "allow" if decision.allowed else "deny",
        "explicit": decision.explicit,
        "statement": None if decision.policy is None else {"policy": decision.policy, "index": decision.statement},
        "reason": decision.reason,
    }


def emit(args: argparse.Namespace, stdout: TextIO, data: Any, text: str | None = None) -> None:
    """Print ``data`` as JSON with ``--format json``, else ``text`` (or a key=value rendering of ``data``)."""
    if getattr(args, "format", "text") == "json":
        stdout.write(json.dumps(data) + "\n")
        return
    if text is None:
        rows = data if isinstance(data, list) else [data]
        text = "".join(
            "  ".join(f"{k}={_plain(v)}" for k, v in row.items()) + "\n" if isinstance(row, dict) else f"{row}\n"
            for row in rows
        )
    stdout.write(text)


def _plain(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    return "-" if value is None else str(value)
