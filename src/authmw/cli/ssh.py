"""SSH remote access: ``notebook create|list|show|update|delete`` and ``ssh authorized-keys`` for OpenSSH.

``authmw ssh authorized-keys --notebook NAME --store URL %u %t %k`` is sshd's ``AuthorizedKeysCommand``: run as
an unprivileged user on every key a client offers, it reads the store read-only (no master key), prints the
one ``authorized_keys`` line that key may log in with, or nothing, and writes one audit record per answer
(before any key is printed: no login without a record). Exit codes: 0 a line printed; 1 refused; 2 malformed
input (``%t``, ``%k``, ``%C``, arguments); 3 the store or the audit log unusable; 4 an internal error. Only
what the answer needs is imported, and the store is read afresh each time (no cache to go stale).

``authmw ssh serve --socket PATH`` gives the same answers from a process that stays up, for stores a cold
process cannot reach quickly (PostgreSQL: its driver alone takes longer to import than a login should wait):
sshd then runs :mod:`authmw.contrib.openssh`, which forwards its arguments over the Unix socket. The daemon
still reads the store on every request, so a revocation is seen by the very next login either way.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

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
from authmw.store.database import StoreTimeouts, open_database
from authmw.store.names import DEFAULT_DOMAIN
from authmw.store.notebook_reads import notebook_access

if TYPE_CHECKING:
    from authmw.store.database import Database

__all__ = ["AUDIT_SYSLOG", "COMMANDS", "REQUEST_LIMIT", "authorized_keys_main", "expiry"]

#: ``--audit-log`` value sending records to syslog (facility authpriv, where sshd logs too): the default.
AUDIT_SYSLOG = "syslog"
# A login waits for these on a PostgreSQL store that is down or slow, then is refused (the administrators'
# defaults wait 10 s per attempt, and sshd asks once per key offered). libpq's connect floor is 2 s.
_TIMEOUTS = StoreTimeouts(pool=2.0, statement=2.0, connect=2, keepalive=5, pool_size=1)


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
    _gate_arguments(parser)
    _request_arguments(parser)
    parser.add_argument("--store", metavar="URL", help="store URL (env AUTHMW_STORE; default sqlite:///./authmw.db)")
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        sys.stderr.write(f"authmw: {exc}\n")
        return EXIT_USAGE
    return _authorized_keys(args, sys.stdin, stdout)


def _now() -> str:
    """RFC 3339 UTC with microseconds, as every other audit record has it (without importing the token module)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1_000_000):06d}Z"


def _authorized_keys(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO, db: Database | None = None) -> int:
    """Answer one attempt: print the line (exit 0) or nothing; ``db``: the daemon's open store (else opened)."""
    record: dict[str, Any] = {
        "event": "ssh_authorized_keys",
        "time": _now(),
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
        line, code = _decide(args, record, db)
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


def _decide(args: argparse.Namespace, record: dict[str, Any], db: Database | None) -> tuple[str | None, int]:
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
        access = _read(args) if db is None else notebook_access(db, args.notebook, args.domain)
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
    db = open_database(url, read_only=True, timeouts=_TIMEOUTS)
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


# -- the daemon ----------------------------------------------------------------------------------------------

#: The most a forwarded request may hold, in bytes (sshd's arguments: an offered key is at most 16 KB of base64).
REQUEST_LIMIT = 65536
_REQUEST_TIMEOUT = 5.0  # seconds a client may take to send its whole request: a stuck one holds one thread only
#: Requests answered at once (a thread each); a connection beyond them is closed unanswered: the client refuses.
CONCURRENT_REQUESTS = 32

_SERVE_HELP = (
    "answer the authorized-keys requests authmw.contrib.openssh forwards over a Unix socket, from a process that "
    "stays up (for a PostgreSQL store); the store is still read on every request"
)


def _serve(args: argparse.Namespace, _stdin: TextIO, _stdout: TextIO) -> int:
    import signal
    import socketserver
    import stat
    import threading

    try:
        check_key_options(args.key_option or ())  # a typo stops the daemon at start, not every login
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    url = getattr(args, "store", None) or os.environ.get("AUTHMW_STORE") or "sqlite:///./authmw.db"
    # A PostgreSQL store down at start: refusals until it is up.
    db = open_database(url, read_only=True, lazy=True, timeouts=_TIMEOUTS)
    path = args.socket
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)  # a previous daemon's; anything else there makes bind fail
    except FileNotFoundError:
        pass

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                raw = _read_request(self.request, time.monotonic() + _REQUEST_TIMEOUT)
                self.request.sendall(json.dumps(_forwarded(raw, args, db)).encode() + b"\n")
            except OSError:
                pass  # the client went away or was too slow: it refuses on its own

    slots = threading.BoundedSemaphore(CONCURRENT_REQUESTS)

    class Server(socketserver.ThreadingUnixStreamServer):
        daemon_threads = True

        def verify_request(self, _request: Any, _client_address: Any) -> bool:
            return slots.acquire(blocking=False)  # False: closed at once, without a thread

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                slots.release()

    # SIGTERM held from the socket's creation until its handler is in place: a stop then always removes it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    mask = os.umask(0o177)  # the socket 0600: only the AuthorizedKeysCommandUser (the daemon's account) asks
    try:
        server = Server(path, Handler)
    except OSError as exc:
        raise UsageError(f"cannot listen on {path}: {exc.strerror}") from None
    finally:
        os.umask(mask)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    sys.stderr.write(f"authmw: answering authorized-keys requests on {path}\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        os.unlink(path)
        db.close()
    return EXIT_OK


def _read_request(sock: Any, deadline: float) -> bytes:
    """One request line, read whole before ``deadline`` (a client trickling bytes gets no more time than a silent
    one): at most ``REQUEST_LIMIT + 1`` bytes, up to the first newline."""
    raw = b""
    while b"\n" not in raw and len(raw) <= REQUEST_LIMIT:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        sock.settimeout(left)
        chunk = sock.recv(min(4096, REQUEST_LIMIT + 1 - len(raw)))
        if not chunk:
            break
        raw += chunk
    if len(raw) > REQUEST_LIMIT:  # refused; what else was sent is read and dropped (bounded), so that the client
        # gets the refusal rather than a reset from a close with its bytes unread
        with contextlib.suppress(OSError):
            for _ in range(16):
                sock.settimeout(max(0.001, min(0.2, deadline - time.monotonic())))
                if not sock.recv(65536):
                    break
    return raw


def _forwarded(raw: bytes, gate: argparse.Namespace, db: Database) -> dict[str, Any]:
    """The answer to one forwarded request, ``{"argv": [sshd's arguments]}``: ``{"code": N, "line": L}``, with
    the daemon's own key options and audit destination (a request cannot choose them)."""
    try:
        if len(raw) > REQUEST_LIMIT or not raw.endswith(b"\n"):
            raise ValueError("too long, or cut short")
        argv = json.loads(raw)["argv"]
        if not isinstance(argv, list) or not all(isinstance(arg, str) for arg in argv):
            raise ValueError("argv is not a list of strings")
        parser = Parser(prog="authmw ssh authorized-keys", add_help=False)
        _request_arguments(parser)
        args = parser.parse_args(argv)
    except (ValueError, KeyError, TypeError, RecursionError, UsageError) as exc:  # RecursionError: nested JSON
        sys.stderr.write(f"authmw: a malformed request refused: {type(exc).__name__}: {str(exc)[:200]}\n")
        return {"code": EXIT_USAGE, "line": None}
    args.key_option, args.audit_log = gate.key_option, gate.audit_log
    out = io.StringIO()
    code = _authorized_keys(args, sys.stdin, out, db)
    return {"code": code, "line": out.getvalue().rstrip("\n") if code == EXIT_OK else None}


_AUTHORIZED_KEYS_HELP = (
    "OpenSSH AuthorizedKeysCommand: print the authorized_keys line the offered key may log into the notebook "
    "with, or nothing (read-only, no master key)"
)


def _request_arguments(parser: argparse.ArgumentParser) -> None:
    """What sshd's ``AuthorizedKeysCommand`` line passes: the notebook, and the attempt's ``%u %t %k``."""
    parser.add_argument("--notebook", required=True, metavar="NAME", help="the notebook this host runs")
    parser.add_argument("--domain", default=DEFAULT_DOMAIN, metavar="D", help="the notebook's domain")
    parser.add_argument(
        "--connection",
        metavar="CONN",
        help="sshd's %%C (client address and port, local address and port): refuse sources the whitelists do not "
        "allow, and record the source",
    )
    parser.add_argument("login", metavar="LOGIN", help="sshd's %%u: the account being logged into")
    parser.add_argument("key_type", metavar="KEY_TYPE", help="sshd's %%t: the offered key's type")
    parser.add_argument("key", metavar="KEY", help="sshd's %%k: the offered key, base64")


def _gate_arguments(parser: argparse.ArgumentParser) -> None:
    """What the operator decides (the command's own options, or the daemon's: never a forwarded request's)."""
    parser.add_argument(
        "--key-option",
        action="append",
        metavar="OPT",
        help="re-enable after restrict: agent-forwarding, port-forwarding, pty, user-rc, X11-forwarding",
    )
    parser.add_argument(
        "--audit-log",
        default=AUDIT_SYSLOG,
        metavar="DEST",
        help="where each decision is recorded: a file (JSON lines), - for stderr, or syslog (default; authpriv)",
    )


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
    add_common(parser, formats=("table", "json"))  # as every administration verb
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


def _add_notebook(commands: Any) -> None:
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


def _add_ssh(commands: Any) -> None:
    ssh = commands.add_parser("ssh", help="OpenSSH integration")
    ssh_verbs = ssh.add_subparsers(dest="ssh_command", required=True, parser_class=Parser)
    keys = ssh_verbs.add_parser("authorized-keys", help=_AUTHORIZED_KEYS_HELP, description=_AUTHORIZED_KEYS_HELP)
    keys.add_argument("--store", metavar="URL", default=argparse.SUPPRESS, help="store URL (env AUTHMW_STORE)")
    _gate_arguments(keys)
    _request_arguments(keys)
    keys.set_defaults(handler=_authorized_keys)
    serve = ssh_verbs.add_parser("serve", help=_SERVE_HELP, description=_SERVE_HELP)
    serve.add_argument("--store", metavar="URL", default=argparse.SUPPRESS, help="store URL (env AUTHMW_STORE)")
    serve.add_argument("--socket", required=True, metavar="PATH", help="the Unix socket to answer on (made 0600)")
    _gate_arguments(serve)
    serve.set_defaults(handler=_serve)


#: The commands this module adds, each with the function adding its parser.
COMMANDS = {"notebook": _add_notebook, "ssh": _add_ssh}
