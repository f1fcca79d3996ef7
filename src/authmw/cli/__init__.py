"""The ``authmw`` command line: administration, policy tools and request debugging."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, TextIO

from authmw import __version__
from authmw.cli import ssh
from authmw.cli._common import (
    DOMAIN_ENV,
    EXIT_ADDRESS_IN_USE,
    EXIT_CODES,
    EXIT_INTERNAL,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    STORE_HELP,
    Parser,
    UsageError,
)
from authmw.errors import AddressInUse, ChangeRefused, ConfigurationError, ServiceUnavailable
from authmw.extras import missing_extra

__all__ = ["main"]


def build_parser() -> Parser:
    """The whole CLI's parser (what ``authmw --help`` and docs/cli.md show), built once per process and value of
    ``AUTHMW_DOMAIN`` (the ``--domain`` defaults and their help read it)."""
    return _parser_for(os.environ.get(DOMAIN_ENV), None)


@lru_cache(maxsize=64)
def _parser_for(domain_env: str | None, command: str | None) -> Parser:  # noqa: ARG001 (the cache key: registrations read the variable)
    """The CLI's parser with every command (``command`` None) or with ``command`` alone: a process runs one command,
    and building them all costs ~15 ms. Built once per process, command and value of ``AUTHMW_DOMAIN``, which the
    registrations read: a program calling :func:`main` repeatedly paid the building each call."""
    parser = Parser(
        prog="authmw", description="Cloud-grade authentication and access control for web apps.", epilog=EXIT_CODES
    )
    parser.add_argument("--version", action="version", version=f"authmw {__version__}")
    parser.add_argument("--store", metavar="URL", help=STORE_HELP)
    parser.add_argument("--config", metavar="FILE", help="YAML configuration file")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, add in _commands().items():
        if command in (None, name):
            add(commands)
    return parser


def _commands() -> dict[str, Callable[[Any], None]]:
    """Every command, in the order ``authmw --help`` lists them, with the function adding its parser."""
    from authmw.cli import admin, debug, envoy, proxy  # on use: sshd's `ssh authorized-keys` skips them (see main)

    return {
        **admin.COMMANDS,
        "policy": _add_policy,
        **debug.COMMANDS,
        **proxy.COMMANDS,
        **envoy.COMMANDS,
        **ssh.COMMANDS,
    }


def _add_policy(commands: Any) -> None:
    from authmw.cli import admin, debug

    policy = commands.add_parser("policy", help="create, attach, validate, check and lint policies")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True, parser_class=Parser)
    admin.register_policy(policy_commands)
    debug.register_policy(policy_commands)


def _command_named(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names after the global options (``--store URL``, ``--config FILE``, or with ``=``); None
    when anything else comes first (``--help``, ``--version``, an abbreviation) or the word is no command: the whole
    parser answers those."""
    index = 0
    while index < len(argv) and (
        argv[index] in ("--store", "--config") or argv[index].startswith(("--store=", "--config="))
    ):
        index += 1 if "=" in argv[index] else 2
    named = argv[index] if index < len(argv) else None
    return named if named in _commands() else None


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it).

    Exit codes: 0 success; 1 a negative answer (invalid signature, deny); 2 bad input, a refused change or a
    missing extra (it names the ``pip install``), with one line on stderr; 3 the store is unavailable (no store at
    the path, or unreachable); 4 an internal error (a bug); 5 the address ``authmw proxy`` or ``authmw authz`` is to
    listen on is already in use.
    """
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["ssh", "authorized-keys"]:
        return ssh.authorized_keys_main(argv[2:], stdout)  # sshd runs it per login attempt: the lean path
    try:
        args = _parser_for(os.environ.get(DOMAIN_ENV), _command_named(argv)).parse_args(argv)
        code: int = args.handler(args, stdin, stdout)
    except AddressInUse as exc:
        sys.stderr.write(f"authmw: {exc}\n")
        return EXIT_ADDRESS_IN_USE
    except (UsageError, ChangeRefused, ConfigurationError) as exc:
        sys.stderr.write(f"authmw: {_one_line(exc)}\n")
        return EXIT_USAGE
    except UnicodeError:
        sys.stderr.write("authmw: an argument or file is not valid UTF-8 text\n")
        return EXIT_USAGE
    except ServiceUnavailable as exc:
        sys.stderr.write(f"authmw: {_one_line(exc.detail)}\n")
        return EXIT_UNAVAILABLE
    except ModuleNotFoundError as exc:  # a feature's extra is not installed (any other missing module is a bug)
        missing = missing_extra(exc)
        if missing is None:
            return _internal(exc)
        sys.stderr.write(f"authmw: {missing}\n")
        return EXIT_USAGE
    except Exception as exc:
        return _internal(exc)
    return code


def _internal(exc: Exception) -> int:
    if os.environ.get("AUTHMW_DEBUG"):
        raise exc
    sys.stderr.write(f"authmw: internal error ({type(exc).__name__}); AUTHMW_DEBUG=1 shows the traceback\n")
    return EXIT_INTERNAL


def _one_line(message: object) -> str:
    return " ".join(str(message).split())
