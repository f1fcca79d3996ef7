"""sshd's ``AuthorizedKeysCommand`` answered by a running ``authmw ssh serve``: forward, print, exit.

``python -m authmw.contrib.openssh --socket PATH --notebook NAME %u %t %k`` sends its arguments after
``--socket PATH`` to the daemon and prints the ``authorized_keys`` line it answers, if any, with its exit code.
It imports the standard library's socket and json only, so a login waits for an interpreter's start and one
round trip, whatever the store (a cold ``authmw ssh authorized-keys`` on PostgreSQL spends longer importing the
driver). The daemon decides, reads the store and writes the audit record; a daemon that is not there, too slow,
or answers anything but a well-formed reply is a refusal (exit 3, a line on stderr for sshd's log), never a key.
"""

from __future__ import annotations

import json
import socket
import sys

__all__ = ["TIMEOUT", "main"]

#: Seconds to wait for the daemon's answer (its store reads have deadlines of their own; sshd's LoginGraceTime
#: bounds the whole login).
TIMEOUT = 20.0
_REPLY_LIMIT = 65536
_EXIT_USAGE, _EXIT_UNAVAILABLE = 2, 3


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] != "--socket":
        sys.stderr.write("authmw: usage: python -m authmw.contrib.openssh --socket PATH --notebook NAME %u %t %k\n")
        return _EXIT_USAGE
    path = argv[1]
    try:
        code, line = _ask(path, argv[2:])
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"authmw: refused: no answer from the gate daemon at {path}: {exc}\n")
        return _EXIT_UNAVAILABLE
    if line is not None:
        sys.stdout.write(line + "\n")
    return code


def _ask(path: str, argv: list[str]) -> tuple[int, str | None]:
    """The daemon's exit code and line (a line only with exit 0); ValueError for a reply that is neither."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(TIMEOUT)
        conn.connect(path)
        conn.sendall(json.dumps({"argv": argv}).encode() + b"\n")
        conn.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := conn.recv(_REPLY_LIMIT):
            reply += chunk
            if len(reply) > _REPLY_LIMIT:
                raise ValueError("reply too long")
    answer = json.loads(reply)
    if not isinstance(answer, dict):
        raise ValueError("malformed reply")
    code, line = answer.get("code"), answer.get("line")
    if type(code) is not int or not 0 <= code <= 4:
        raise ValueError("malformed reply")
    if code == 0 and not (isinstance(line, str) and line and "\n" not in line):
        raise ValueError("malformed reply")
    return code, line if code == 0 else None


if __name__ == "__main__":
    sys.exit(main())
