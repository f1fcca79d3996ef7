"""What every ``authmw`` command shares: exit codes, the parser class, global options, output."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from authmw.errors import ConfigurationError

if TYPE_CHECKING:
    from authmw.policy import Decision
    from authmw.settings import Settings

__all__ = [
    "DOMAIN_ENV",
    "EXIT_ADDRESS_IN_USE",
    "EXIT_CODES",
    "EXIT_INTERNAL",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "STORE_HELP",
    "Parser",
    "UsageError",
    "add_common",
    "add_shared_state",
    "check_action",
    "decision_report",
    "emit",
    "open_cli_store",
    "parse_context",
    "settings_of",
    "table_text",
    "with_flags",
]

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTERNAL, EXIT_ADDRESS_IN_USE = 0, 1, 2, 3, 4, 5
#: The domain the administration verbs name unless ``--domain`` says otherwise (default: ``default``).
DOMAIN_ENV = "AUTHMW_DOMAIN"
#: What each exit code means (``authmw --help`` shows it).
EXIT_CODES = (
    "exit codes: 0 success; 1 a negative answer (invalid signature, deny); 2 bad input, a refused change or a "
    "missing extra (one line on stderr); 3 the store is unavailable (missing or unreachable); 4 an internal error "
    "(a bug); 5 the address to listen on is already in use"
)

STORE_HELP = (
    "store URL: sqlite:///relative/path.db, sqlite:////absolute/path.db or postgresql://... "
    "(env AUTHMW_STORE; default sqlite:///./authmw.db; only 'authmw init' creates a store)"
)


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
        help=STORE_HELP,
    )
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="YAML configuration file")
    parser.add_argument("--format", choices=formats, default=formats[0], help="output format")


def add_shared_state(parser: argparse.ArgumentParser) -> None:
    """``--shared-state URL``, for the commands that serve requests."""
    parser.add_argument(
        "--shared-state",
        metavar="URL",
        help=(
            "Redis holding the replay window, limits and change notices shared by several processes: "
            "redis://HOST:PORT/DB (env AUTHMW_SHARED_STATE; or shared_state: in --config)"
        ),
    )


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings of ``--config`` with the command's ``--shared-state``, if it has one."""
    from authmw.settings import load_settings  # on use: `ssh authorized-keys` must start fast and needs none

    try:
        return with_flags(load_settings(getattr(args, "config", None)), args)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


def with_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    """``settings`` with what the global flags override (``--shared-state``); a reload applies them again."""
    url = getattr(args, "shared_state", None)
    return settings if not url else replace(settings, shared_state=url)


@contextmanager
def open_cli_store(
    args: argparse.Namespace,
    *,
    create: bool = False,
    master_key: bool = True,
    timeouts: Any = None,
    lazy: bool = False,
) -> Iterator[Any]:
    """The store named by ``--store`` / ``$AUTHMW_STORE`` / the config file / the default, closed afterwards;
    only ``init`` passes ``create`` (a missing store is otherwise exit 3, and nothing is created);
    ``master_key=False``: without reading the master key, for commands reading public data only. ``timeouts``
    and ``lazy``: a serving process's (:func:`authmw.store.open_store`)."""
    from authmw.store import STORE_ENV, open_store
    from authmw.store.redisstate import shared_state
    from authmw.store.secrets import MASTER_KEY_FILE_ENV

    settings = settings_of(args)
    environ = dict(os.environ)
    announce = shared_state(settings)
    if settings.master_key_file and not environ.get(MASTER_KEY_FILE_ENV):
        environ[MASTER_KEY_FILE_ENV] = settings.master_key_file
    url = getattr(args, "store", None) or environ.get(STORE_ENV) or settings.store
    store = open_store(
        url,
        create=create,
        master_key=master_key,
        whitelist_limit=settings.whitelist_limit,
        environ=environ,
        timeouts=timeouts,
        lazy=lazy,
    )
    if announce is not None:  # every change the command writes tells the running processes at once
        from authmw.assembly import announce_changes

        announce_changes(store, announce)
    try:
        yield store
    finally:
        store.close()


def parse_context(given: str | Sequence[str] | None) -> dict[str, Any]:
    """``--context``: condition keys, each ``KEY=VALUE`` (a string) or a JSON object of strings, numbers,
    booleans or lists of them (repeatable: later keys win)."""
    if not given:
        return {}
    context: dict[str, Any] = {}
    for text in [given] if isinstance(given, str) else given:
        if not text.lstrip().startswith("{"):
            key, equals, value = text.partition("=")
            if not equals or not key.strip():
                raise UsageError(f"--context: expected KEY=VALUE or a JSON object, got {text!r}")
            context[key.strip()] = value
            continue
        try:
            found = json.loads(text)
        except ValueError:
            raise UsageError("--context: not valid JSON") from None
        if not isinstance(found, dict) or not all(_context_value(v) for v in found.values()):
            raise UsageError("--context: a JSON object of strings, numbers, booleans or lists of them")
        context.update(found)
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
    """The decision as ``policy check`` and ``explain`` print it: decision, explicit, statement, reason."""
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
    if text is None and getattr(args, "format", "text") == "table":
        text = table_text(data)
    if text is None:
        rows = data if isinstance(data, list) else [data]
        text = "".join(
            "  ".join(f"{k}={_plain(v)}" for k, v in row.items()) + "\n" if isinstance(row, dict) else f"{row}\n"
            for row in rows
        )
    stdout.write(text)


def table_text(data: Any) -> str:
    """Records as aligned columns under a header; one record (a ``show``) as ``field  value`` lines."""
    if isinstance(data, dict):
        width = max((len(key) for key in data), default=0)
        return "".join(f"{key.ljust(width)}  {_plain(value)}\n" for key, value in data.items())
    rows = [row for row in data if isinstance(row, dict)]
    if not rows:
        return "(none)\n"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[c.upper() for c in columns]] + [[_plain(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n" for line in cells)


def _plain(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    return "-" if value is None else str(value)
