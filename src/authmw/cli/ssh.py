"""SSH remote access: ``notebook create|list|show|update|delete`` and ``ssh authorized-keys`` for OpenSSH.

``authmw ssh authorized-keys --notebook NAME --store URL %u %t %k`` is sshd's ``AuthorizedKeysCommand``: run as
an unprivileged user on every key a client offers, it reads the store read-only (no master key), prints the
one ``authorized_keys`` line that key may log in with, or nothing, and writes one audit record per answer
(before any key is printed: no login without a record). Exit codes: 0 a line printed; 1 refused; 2 malformed
input (``%t``, ``%k``, ``%C``, arguments); 3 the store or the audit log unusable; 4 an internal error. Only
what the answer needs is imported, and the store is read afresh each time (no cache to go stale).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, TextIO

from authmw.cli._common import (
    DOMAIN_ENV,
    EXIT_INTERNAL,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Parser,
    UsageError,
    add_common,
    emit,
    open_cli_store,
)
from authmw.clientaddr import parse_address
from authmw.errors import ChangeRefused, ConfigurationError, ServiceUnavailable
from authmw.sshaccess import (
    DEFAULT_LOGIN_USER,
    NotebookAccess,
    blob_fingerprint,
    check_key_options,
    decide,
    offered_key,
)
from authmw.store.database import open_database
from authmw.store.names import DEFAULT_DOMAIN
from authmw.store.notebook_reads import notebook_access

__all__ = ["AUDIT_SYSLOG", "authorized_keys_main", "expiry", "register"]

#: ``--audit-log`` value sending records to syslog (facility authpriv, where sshd logs too): the default.
AUDIT_SYSLOG = "syslog"


# -- notebooks ----------------------------------------------------------------------------------------------


def _notebook_view(notebook: Any) -> dict[str, Any]:
    view: dict[str, Any] = notebook.to_dict()
    view["whitelist"] = list(notebook.whitelist)
    return view


def _notebook_create(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        notebook = store.create_notebook(
            args.name,
            owner=args.owner,
            keypair=args.keypair,
            domain=args.domain,
            workspace=args.workspace,
            whitelist=args.whitelist or (),
            login_user=args.login_user,
        )
    emit(args, stdout, _notebook_view(notebook))
    return EXIT_OK


def _notebook_list(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args, master_key=False) as store:
        store.require_schema()
        notebooks = store.list_notebooks(domain=args.domain, owner=args.owner)
    emit(args, stdout, [_notebook_view(n) for n in notebooks])
    return EXIT_OK


def _notebook_show(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args, master_key=False) as store:
        store.require_schema()
        notebook = store.find_notebook(args.name, domain=args.domain)
    emit(args, stdout, _notebook_view(notebook))
    return EXIT_OK


def _notebook_update(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    if args.whitelist is not None and args.clear_whitelist:
        raise UsageError("give --whitelist or --clear-whitelist, not both")
    whitelist = [] if args.clear_whitelist else args.whitelist
    with open_cli_store(args) as store:
        store.require_schema()
        notebook = store.update_notebook(
            args.name,
            domain=args.domain,
            owner=args.owner,
            keypair=args.keypair,
            workspace=args.workspace,
            whitelist=whitelist,
            login_user=args.login_user,
        )
    emit(args, stdout, _notebook_view(notebook))
    return EXIT_OK


def _notebook_delete(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        store.delete_notebook(args.name, domain=args.domain)
    emit(args, stdout, {"deleted": args.name}, f"notebook {args.name} deleted\n")
    return EXIT_OK


# -- the AuthorizedKeysCommand ------------------------------------------------------------------------------


def authorized_keys_main(argv: list[str], stdout: TextIO) -> int:
    """``authmw ssh authorized-keys ARGS``, parsed by itself so that nothing else of the CLI is imported."""
    parser = Parser(prog="authmw ssh authorized-keys", description=_AUTHORIZED_KEYS_HELP)
    _authorized_keys_arguments(parser)
    parser.add_argument("--store", metavar="URL", help="store URL (env AUTHMW_STORE; default sqlite:///./authmw.db)")
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        sys.stderr.write(f"authmw: {exc}\n")
        return EXIT_USAGE
    return _authorized_keys(args, sys.stdin, stdout)


def _authorized_keys(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    record: dict[str, Any] = {
        "event": "ssh_authorized_keys",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "notebook": args.notebook,
        "domain": args.domain,
        "login": args.login,
        "user": None,
        "key_type": args.key_type,
        "fingerprint": None,
        "source": None,
        "outcome": "deny",
        "reason": None,
    }
    try:
        line, code = _decide(args, record)
    except Exception as exc:  # a bug must still refuse, and say so in the audit log
        if os.environ.get("AUTHMW_DEBUG"):
            raise
        record["reason"], record["detail"] = "internal_error", type(exc).__name__
        line, code = None, EXIT_INTERNAL
    try:
        _audit(args.audit_log, record)
    except OSError as exc:
        # Without its audit record no login is let through.
        sys.stderr.write(f"authmw: cannot write the audit record to {args.audit_log}: {exc.strerror}\n")
        return EXIT_UNAVAILABLE
    if line is None:
        sys.stderr.write(f"authmw: refused: {record['reason']}\n")
        return code
    stdout.write(line + "\n")
    return EXIT_OK


def _decide(args: argparse.Namespace, record: dict[str, Any]) -> tuple[str | None, int]:
    """The line to print (None: refused) and the exit code, filling the audit ``record`` in."""
    try:
        options = check_key_options(args.key_option or ())
        source = _source(args.connection)
        record["source"] = source
        blob = offered_key(args.key_type, args.key)
    except ValueError as exc:
        record["reason"], record["detail"] = "malformed_input", str(exc)
        return None, EXIT_USAGE
    record["fingerprint"] = blob_fingerprint(blob)
    try:
        access = _read(args)
    except (ServiceUnavailable, ConfigurationError, ChangeRefused, ValueError) as exc:
        record["reason"] = "store_unavailable"
        record["detail"] = " ".join(str(getattr(exc, "detail", None) or exc).split())
        return None, EXIT_UNAVAILABLE
    if access is not None and access.owner is not None:
        record["user"] = access.owner.user_name
    verdict = decide(access, login=args.login, blob=blob, source=source, now=int(time.time()), options=options)
    record["reason"] = verdict.reason.value
    if verdict.line is None:
        return None, EXIT_INVALID
    record["outcome"] = "allow"
    return verdict.line, EXIT_OK


def _read(args: argparse.Namespace) -> NotebookAccess | None:
    url = getattr(args, "store", None) or os.environ.get("AUTHMW_STORE") or "sqlite:///./authmw.db"
    db = open_database(url, read_only=True)
    try:
        return notebook_access(db, args.notebook, args.domain)
    finally:
        db.close()


def _source(connection: str | None) -> str | None:
    """The client address of sshd's ``%C`` (``client-address client-port local-address local-port``)."""
    if connection is None:
        return None
    parts = connection.split()
    address = parse_address(parts[0]) if len(parts) == 4 else None
    if address is None:
        raise ValueError("malformed connection (%C): expected 'client-address port local-address port'")
    return str(address)


def _audit(destination: str, record: dict[str, Any]) -> None:
    text = json.dumps(record, separators=(",", ":"))
    if destination == "-":
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    elif destination == AUDIT_SYSLOG:
        import syslog

        syslog.openlog("authmw-ssh", syslog.LOG_PID, syslog.LOG_AUTHPRIV)
        syslog.syslog(syslog.LOG_INFO if record["outcome"] == "allow" else syslog.LOG_NOTICE, text)
    else:
        # One write of one line with O_APPEND: records of concurrent logins never interleave.
        fd = os.open(destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, (text + "\n").encode())
        finally:
            os.close(fd)


_AUTHORIZED_KEYS_HELP = (
    "OpenSSH AuthorizedKeysCommand: print the authorized_keys line the offered key may log into the notebook "
    "with, or nothing (read-only, no master key)"
)


def _authorized_keys_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--notebook", required=True, metavar="NAME", help="the notebook this host runs")
    parser.add_argument("--domain", default=DEFAULT_DOMAIN, metavar="D", help="the notebook's domain")
    parser.add_argument(
        "--connection",
        metavar="CONN",
        help="sshd's %%C (client address and port, local address and port): refuse sources the whitelists do not "
        "allow, and record the source",
    )
    parser.add_argument(
        "--key-option",
        action="append",
        metavar="OPT",
        help="re-enable after restrict (repeatable): agent-forwarding, port-forwarding, pty, user-rc, X11-forwarding",
    )
    parser.add_argument(
        "--audit-log",
        default=AUDIT_SYSLOG,
        metavar="DEST",
        help="where each decision is recorded: a file (JSON lines), - for stderr, or syslog (default; authpriv)",
    )
    parser.add_argument("login", metavar="LOGIN", help="sshd's %%u: the account being logged into")
    parser.add_argument("key_type", metavar="KEY_TYPE", help="sshd's %%t: the offered key's type")
    parser.add_argument("key", metavar="KEY", help="sshd's %%k: the offered key, base64")


def expiry(text: str) -> int:
    """``--expires``: an ISO 8601 date or date and time (UTC unless it says otherwise), as seconds since 1970."""
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {text!r} (say 2027-01-31T18:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


# -- registration -------------------------------------------------------------------------------------------


def _command(commands: Any, name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help_text, description=help_text)
    add_common(parser)
    default = os.environ.get(DOMAIN_ENV) or DEFAULT_DOMAIN
    parser.add_argument(
        "--domain", default=default, metavar="D", help=f"the domain (env {DOMAIN_ENV}; default: {default})"
    )
    parser.set_defaults(handler=handler)
    return parser


def _notebook_fields(parser: argparse.ArgumentParser, *, creating: bool) -> None:
    parser.add_argument("--owner", required=creating, metavar="U", help="the notebook's owner")
    parser.add_argument("--keypair", required=creating, metavar="K", help="the owner's key pair that opens it")
    parser.add_argument("--workspace", metavar="W", help="workspace name or id" + (" (default: 0)" if creating else ""))
    parser.add_argument(
        "--whitelist", nargs="+", metavar="CIDR", help="addresses or CIDRs SSH logins may come from (none: any)"
    )
    parser.add_argument(
        "--login-user",
        default=DEFAULT_LOGIN_USER if creating else None,
        metavar="ACCOUNT",
        help="the account SSH logs into" + (f" (default: {DEFAULT_LOGIN_USER})" if creating else ""),
    )


def register(commands: Any) -> None:
    """Add ``notebook`` and ``ssh``."""
    notebook = commands.add_parser("notebook", help="notebook instances: SSH remote access")
    verbs = notebook.add_subparsers(dest="notebook_command", required=True, parser_class=Parser)
    create = _command(verbs, "create", _notebook_create, "create a notebook opened by its owner's key pair")
    create.add_argument("name", metavar="NAME")
    _notebook_fields(create, creating=True)
    _command(verbs, "list", _notebook_list, "list the domain's notebooks").add_argument(
        "--owner", metavar="U", help="only this user's"
    )
    _command(verbs, "show", _notebook_show, "show one notebook").add_argument("name", metavar="NAME")
    update = _command(verbs, "update", _notebook_update, "change a notebook's owner, key pair, workspace, access")
    update.add_argument("name", metavar="NAME")
    _notebook_fields(update, creating=False)
    update.add_argument("--clear-whitelist", action="store_true", help="allow logins from any address")
    _command(verbs, "delete", _notebook_delete, "delete a notebook: its next SSH login is refused").add_argument(
        "name", metavar="NAME"
    )

    ssh = commands.add_parser("ssh", help="OpenSSH integration")
    ssh_verbs = ssh.add_subparsers(dest="ssh_command", required=True, parser_class=Parser)
    keys = ssh_verbs.add_parser("authorized-keys", help=_AUTHORIZED_KEYS_HELP, description=_AUTHORIZED_KEYS_HELP)
    keys.add_argument("--store", metavar="URL", default=argparse.SUPPRESS, help="store URL (env AUTHMW_STORE)")
    _authorized_keys_arguments(keys)
    keys.set_defaults(handler=_authorized_keys)
