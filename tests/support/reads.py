"""The read audit of ``.ci/run``: with ``AUTHMW_TEST_OUTSIDE`` naming a directory (the original checkout's parent)
and ``AUTHMW_TEST_READS_LOG`` a file, every test process (pytest, its xdist workers, the Python processes the
tests start) appends to the log each path it opens or lists under what stood beside the checkout when the run
began (``../shared``, say), outside the repository and the Python installation. The run fails if the log is not
empty: the repo must stand alone. What appears there during the run (the tests' temporary files, when the
checkout sits in the temporary directory) and pytest's own temporary root are not watched.

An ``sys.addaudithook`` hook sees every ``open`` (``open``, ``Path.read_text``, ``os.open``) and directory listing;
any other event costs one set lookup, and a path costs a string test unless it is under the watched directory.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

OUTSIDE_ENV = "AUTHMW_TEST_OUTSIDE"
LOG_ENV = "AUTHMW_TEST_READS_LOG"
#: The names beside the checkout when the run began (newline-separated), and the checkout itself (not watched).
SIBLINGS_ENV = "AUTHMW_TEST_OUTSIDE_SIBLINGS"
CHECKOUT_ENV = "AUTHMW_TEST_CHECKOUT"
ROOT = Path(__file__).resolve().parents[2]
_EVENTS = frozenset({"open", "os.listdir", "os.scandir"})


def install() -> None:
    """Start auditing this process if the environment asks for it (once per process)."""
    outside, log = os.environ.get(OUTSIDE_ENV), os.environ.get(LOG_ENV)
    if not outside or not log or getattr(sys, "_authmw_reads_audited", False):
        return
    sys._authmw_reads_audited = True  # type: ignore[attr-defined]
    parent = os.path.realpath(outside)
    siblings = os.environ.get(SIBLINGS_ENV, "")
    names = siblings.split("\n") if siblings else os.listdir(parent)
    ours = os.path.basename(os.path.realpath(os.environ.get(CHECKOUT_ENV, ROOT)))
    entries = [os.path.join(parent, n) for n in names if n and n != ours and not n.startswith("pytest-of-")]
    if not entries:
        return
    watched = tuple(e + os.sep for e in entries)
    # The repository, and the interpreter with its virtualenv (which may be a symlink into the original checkout).
    allowed = tuple({os.path.realpath(p) + os.sep for p in (ROOT, sys.prefix, sys.base_prefix, sys.exec_prefix)})
    # What the interpreter itself reads beside them, the package metadata of an editable install elsewhere: the
    # import path's folders are listed and the metadata read (entry points). Its code is not: tests import this
    # checkout's (pyproject.toml's pythonpath, tests/conftest.py).
    listed = {os.path.realpath(p) for p in sys.path if p}
    log_path = os.path.realpath(log)
    seen: set[str] = set()

    def expected(event: str, real: str) -> bool:
        if real == log_path or (real + os.sep).startswith(allowed) or not (real + os.sep).startswith(watched):
            return True
        if event != "open":
            return real in listed
        return os.path.basename(os.path.dirname(real)).endswith((".dist-info", ".egg-info"))

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event not in _EVENTS or not args or args[0] is None or isinstance(args[0], int):
            return
        with contextlib.suppress(Exception):  # a bad path is the caller's error to see, not the audit's
            path = os.path.abspath(os.fsdecode(args[0]))
            if not (path + os.sep).startswith(watched):
                return
            real = os.path.realpath(path)
            if real in seen or expected(event, real):
                return
            seen.add(real)
            with open(log_path, "a", encoding="utf-8") as out:  # re-enters the hook: the log is let through
                out.write(f"{os.getpid()} {event} {real}\n")

    sys.addaudithook(hook)
