"""The audit log file: records appended to memory by the request, written by a thread of its own.

``authmw proxy`` and ``authmw authz`` write their records here (``--audit-log``, ``audit_log:``); an app with the
middleware calls :func:`audit_to` once (``audit_to("/var/log/authmw/audit.log")``), else its records go to the
``authmw.audit`` logger as before.

``log_decision`` runs on the request's path (an event loop, often): writing a file there (through ``logging``,
as before) cost most of a record, and a slow disk would stall every request. Here a record costs a list append;
a background thread writes the lines in batches, every :data:`FLUSH_EVERY` seconds or sooner when
2,048 lines wait, with one ``write`` per batch of whole lines on a file opened ``O_APPEND`` (so the worker
processes of ``authmw proxy --workers N`` share one file, each write landing whole after the others').

- **Bounded**: at most ``capacity`` lines wait. When the file cannot keep up (a full or hung disk), further records
  are *lost, and counted*: :func:`records_lost` (``authmw_audit_records_lost`` in the proxy's ``/metrics``) and a
  warning on the ``authmw`` logger at the first loss, then at most every 10 seconds while it lasts
  (from the caller: the writer thread may be the one stuck). Blocking the request
  instead would stall the event loop and every request with it (health checks too), a failure of the whole gateway
  for the failure of its log; the loss is made loud instead of silent.
- **No record lost on a clean stop**: :meth:`AuditWriter.close` writes what waits (the proxy and ``authz`` call
  :func:`close_audit` after draining on SIGTERM; an interpreter exit does it too), and a record written after that
  is written at once.
- **Rotation**: before each batch the file's name is looked at again; renamed or removed (``logrotate``'s default),
  the file is opened again under its name. ``copytruncate`` works as is (``O_APPEND`` writes at the new end).
- **Fork**: a child process (``--workers``, a pre-forking server) starts a writer thread of its own on the same
  file, and leaves the lines that waited in the parent to the parent.
"""

from __future__ import annotations

import atexit
import collections
import errno
import logging
import os
import select
import stat
import threading
import time
import weakref

from authmw import audit

__all__ = ["CAPACITY", "FLUSH_EVERY", "AuditWriter", "audit_to", "audit_to_logger", "close_audit", "records_lost"]

#: Seconds a record may wait in memory before it is written.
FLUSH_EVERY = 0.2
#: Lines waiting that wake the writer before :data:`FLUSH_EVERY` (a batch is written whole by one ``write``).
_SOON = 2048
#: Seconds between two warnings that records were lost.
_WARN_EVERY = 10.0
#: Lines that may wait at most, by default: at ~700 bytes a record, ~45 MB, several seconds of a busy gateway.
CAPACITY = 65536
#: Bytes at most in one ``write`` to a pipe or socket (standard error read by a collector): ``PIPE_BUF`` bytes are
#: written whole; a file or a terminal takes a batch of any size whole.
_PIPE_CHUNK = select.PIPE_BUF

logger = logging.getLogger("authmw")

_writers: weakref.WeakSet[AuditWriter] = weakref.WeakSet()  # every open writer, to restart after a fork
_lost_before = [0]  # records lost by writers closed since (records_lost counts the process' whole life)


class AuditWriter:
    """Appends lines to ``target`` (a file name, or ``-`` for standard error) from a thread of its own;
    :meth:`write` only appends to memory. ``capacity`` lines may wait; beyond, records are lost and counted."""

    def __init__(self, target: str, *, capacity: int = CAPACITY, every: float = FLUSH_EVERY) -> None:
        self.target = target
        self.capacity = capacity
        self.every = every
        self.lost = 0  # records dropped because ``capacity`` lines were waiting
        self._fd = 2 if target == "-" else self._open()
        self._identity = self._identity_of_fd()
        mode = os.fstat(self._fd).st_mode
        # A file with a name to follow through rotations; not standard error, even when it is a file (a redirection
        # or a test's capture): "-" is no name to open again.
        self._regular = target != "-" and stat.S_ISREG(mode)
        self._whole = not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode))  # takes a batch whole in one write
        self._loss_warned = self._failure_warned = -_WARN_EVERY  # monotonic times of the last warnings
        self._closed = False
        self._start()
        _writers.add(self)

    def _start(self) -> None:
        self._pending: collections.deque[str] = collections.deque()  # append/popleft: atomic, no lock needed
        self._carry = b""  # what a failed write left of a batch: written first next time, so lines stay whole
        self._wake = threading.Event()
        self._io = threading.Lock()  # one batch at a time (the thread, flush(), close())
        self._thread = threading.Thread(target=self._run, name="authmw-audit", daemon=True)
        self._thread.start()

    def write(self, line: str) -> None:
        """Queue one record (a line without its newline). Never blocks; called from any thread."""
        pending = self._pending
        waiting = len(pending)
        if waiting >= self.capacity:
            self.lost += 1  # a racing increment may miss one: the count is for alarms, not for accounting
            if time.monotonic() - self._loss_warned >= _WARN_EVERY:
                self._warn_of_loss()  # here: the thread may be the one stuck (in a write to a hung disk)
            return
        pending.append(line)
        if self._closed:  # stopped: nobody else will write it
            self.flush()
        elif waiting == _SOON:
            self._wake.set()

    def flush(self, timeout: float | None = None) -> bool:
        """Write every line queued so far (blocking: for shutdown and tests); False if another write still held
        the file after ``timeout`` seconds (a hung disk)."""
        if not self._io.acquire(timeout=-1 if timeout is None else timeout):
            return False
        try:
            self._write_batches()
        finally:
            self._io.release()
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread once it wrote every line queued; a record written later is written at once. A write
        hung for ``timeout`` seconds is given up on (with a warning), so that a stuck disk cannot hold an exit."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout)
        if self._thread.is_alive() or not self.flush(timeout=timeout):
            logger.warning("audit log %s: still writing after %g s, %d records not written", self.target, timeout,
                           len(self._pending))  # fmt: skip

    def release(self) -> None:
        """:meth:`close`, then close the file (the writer is no longer used)."""
        self.close()
        _writers.discard(self)
        _lost_before[0] += self.lost
        if self._fd != 2:
            os.close(self._fd)
        self._fd = -1

    # -- the thread ---------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.every)
            self._wake.clear()
            try:
                with self._io:
                    self._write_batches()
            except Exception:  # the thread must outlive any failure: the next batch may succeed
                logger.exception("audit log %s: writing failed", self.target)

    def _write_batches(self) -> None:
        if self._fd < 0:
            return
        if self._regular:
            self._follow_rotation()
        pending = self._pending
        while self._carry or pending:
            if self._carry:
                data, self._carry = self._carry, b""
            else:
                lines = [pending.popleft() for _ in range(min(len(pending), _SOON * 4))]
                lines.append("")
                data = "\n".join(lines).encode("utf-8", "backslashreplace")
            if not self._put(data):
                return

    def _put(self, data: bytes) -> bool:
        """Write ``data`` (whole lines); False if the file refused it (kept to be written first next time)."""
        view = memoryview(data)
        while view:
            chunk = view if self._whole else view[: self._pipe_chunk(view)]
            try:
                written = os.write(self._fd, chunk)
            except InterruptedError:
                continue
            except OSError as exc:
                self._carry = bytes(view)
                self._fail(exc)
                return False
            view = view[written:]
        return True

    def _pipe_chunk(self, view: memoryview) -> int:
        """What of ``view`` a pipe takes whole in one write: lines up to ``PIPE_BUF`` (a longer line alone)."""
        if len(view) <= _PIPE_CHUNK:
            return len(view)
        head = bytes(view[:_PIPE_CHUNK])
        end = head.rfind(b"\n")
        if end >= 0:
            return end + 1
        longer = bytes(view).find(b"\n")
        return len(view) if longer < 0 else longer + 1

    def _fail(self, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._failure_warned >= _WARN_EVERY:
            self._failure_warned = now
            reason = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            logger.warning("audit log %s: cannot write (%s: %s): records wait in memory", self.target, reason, exc)

    def _warn_of_loss(self) -> None:
        self._loss_warned = time.monotonic()
        logger.warning(
            "audit log %s is not keeping up: %d records lost so far (%d were waiting)",
            self.target,
            self.lost,
            self.capacity,
        )

    # -- the file -----------------------------------------------------------------------------------------------

    def _open(self) -> int:
        # 0o640: the records name users, keys and clients; the log shipper reads them through the group.
        return os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def _identity_of_fd(self) -> tuple[int, int]:
        found = os.fstat(self._fd)
        return found.st_dev, found.st_ino

    def _follow_rotation(self) -> None:
        """Open the file again under its name when the name no longer leads to the file written (rotated)."""
        try:
            found = os.stat(self.target)
            if (found.st_dev, found.st_ino) == self._identity:
                return
        except FileNotFoundError:
            pass
        try:
            fresh = self._open()
        except OSError as exc:
            self._fail(exc)
            return  # the old file keeps the records until the name can be opened
        os.close(self._fd)
        self._fd = fresh
        self._identity = self._identity_of_fd()

    def _after_fork(self) -> None:
        """In a child: the parent's thread is gone and its lines are the parent's to write; start afresh."""
        self.lost = 0
        self._loss_warned = self._failure_warned = -_WARN_EVERY
        if not self._closed:
            self._start()
        else:
            self._pending = collections.deque()
            self._carry = b""
            self._io = threading.Lock()


_installed: list[AuditWriter | None] = [None]


def audit_to(target: str | None) -> AuditWriter:
    """Write every audit record to ``target`` (a file name, ``-`` or None for standard error), one JSON object per
    line, by an :class:`AuditWriter` (instead of the ``authmw.audit`` logger). The same target again keeps the
    running writer; another one replaces it (what waited is written to the previous target first)."""
    target = target or "-"
    current = _installed[0]
    if current is not None and current.target == target and current._fd >= 0:
        return current
    writer = AuditWriter(target)
    _installed[0] = writer
    audit.send_to(writer.write)
    if current is not None:
        current.release()
    return writer


def audit_to_logger() -> None:
    """Records go to the ``authmw.audit`` logger again; the writer, if any, writes what waited and is closed."""
    current, _installed[0] = _installed[0], None
    audit.send_to(None)
    if current is not None:
        current.release()


def close_audit() -> None:
    """Write every record waiting, and write later ones at once (for a clean stop: after the server drained)."""
    current = _installed[0]
    if current is not None:
        current.close()


def records_lost() -> int:
    """Audit records this process lost because the audit log did not keep up."""
    current = _installed[0]
    return _lost_before[0] + (0 if current is None else current.lost)


def _restart_after_fork() -> None:
    _lost_before[0] = 0  # the parent's losses are the parent's to report
    for writer in list(_writers):
        writer._after_fork()


os.register_at_fork(after_in_child=_restart_after_fork)
atexit.register(close_audit)
