"""The audit record of one decision (docs/audit.md): who, what, where, the outcome and what decided it.

Every record has the same keys; ``time`` is when it was written, in RFC 3339 UTC with microseconds
(``2026-12-07T19:51:23.123456Z``); ``event`` says what it records: ``request`` (a request the pipeline checked), or
one of the IAM endpoints' :data:`EVENTS` (a login, a token checked or revoked, temporary credentials issued),
which add their own facts (:func:`event_record`). No record holds a password, token, secret key, security
token, signature, body or session policy text (a session policy is recorded by its SHA-256 digest).

A record is one line of JSON (:func:`audit_line`, the same text as ``json.dumps`` of :func:`audit_record`, built
from memoised pieces). Records go to :data:`AUDIT_LOGGER`, or, once a sink is set (:func:`send_to`: the audit log
writer of :mod:`authmw.auditlog`, which takes the lines off the request's path), to that sink instead.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _quoted  # json.dumps' own escaping of a str (C speed)
from typing import Any

from authmw.cache import BoundedCache
from authmw.errors import AuthmwError
from authmw.models import AuthContext

__all__ = [
    "AUDIT_LOGGER",
    "EVENTS",
    "Sink",
    "audit_line",
    "audit_record",
    "event_record",
    "log_decision",
    "log_event",
    "rfc3339",
    "send_to",
]

#: The events of the IAM endpoints: a password login that succeeded, failed (wrong password, unknown user,
#: malformed, ...) or was refused by a limit before any password work (``login_locked``: 429 or 503); a token
#: checked (``HEAD``) or revoked (``DELETE``); temporary credentials for the caller itself (``credentials_issued``)
#: or for an agency (``agency_assumed``); a call of the administration API (``iam_admin``, :mod:`authmw.iam_admin`:
#: ``action`` names it, ``refused`` the store's refusal code). ``outcome`` and ``error_code`` say how they ended.
EVENTS = frozenset(
    {
        *("login", "login_failed", "login_locked", "token_checked", "token_revoked", "credentials_issued"),
        *("agency_assumed", "iam_admin"),
    }
)

#: The logger every adapter writes decisions to, one JSON object per record, at INFO.
AUDIT_LOGGER = logging.getLogger("authmw.audit")
_LOGGER = logging.getLogger("authmw")

#: Where records go instead of :data:`AUDIT_LOGGER`: a callable taking one line (JSON, no newline) that must not
#: block (it runs on the request's path, often on an event loop).
Sink = Callable[[str], None]
_sink: Sink | None = None

#: The keys whose values are the same for every request of one caller, route and decision (see _TAIL_KEY),
#: serialised once per such combination; the other keys are the request's own.
_TAIL = (
    *("route", "action", "resource", "auth_method", "access_key", "user_id", "user_name", "domain", "project_id"),
    *("workspace_id", "policy", "statement", "reason", "agency", "delegation"),
)
_HEAD = ("outcome", "enforced", "status", "error_code", "detail")
#: Enough for every caller × route × workspace × decision a busy gateway sees in a while; a miss costs one
#: json.dumps of the record (what every record cost before), so a flood of new callers degrades to that.
_TAILS: BoundedCache[tuple[Any, ...], str] = BoundedCache(4096)
_HEADS: BoundedCache[tuple[Any, ...], str] = BoundedCache(1024)


def rfc3339(seconds: float) -> str:
    """``seconds`` since the epoch in RFC 3339 UTC, to the microsecond: ``2026-12-07T19:51:23.123456Z``."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: The start of the last second formatted (µs since the epoch) and its text up to the fraction: one tuple, replaced
#: whole, so a thread never reads half of it.
_SECOND: list[tuple[int, str]] = [(-1 << 62, "")]
_DIGITS = [f"{n:03d}" for n in range(1000)]  # the fraction as two table lookups: cheaper than formatting it


def _micros(seconds: float) -> int:
    """``seconds`` in whole microseconds, rounded as datetime rounds a timestamp (half to even, after splitting off
    the whole seconds), so that :func:`_stamp` and :func:`rfc3339` write the same text for every float."""
    fraction, whole = math.modf(seconds)
    return int(whole) * 1_000_000 + round(fraction * 1e6)


def _stamp(micros: int) -> str:
    """``micros`` since the epoch as :func:`rfc3339` writes it, the date and time formatted once per second."""
    cached = _SECOND[0]
    within = micros - cached[0]
    if not 0 <= within < 1_000_000:
        start = micros - micros % 1_000_000
        cached = _SECOND[0] = (start, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(start // 1_000_000)))
        within = micros - start
    return f"{cached[1]}{_DIGITS[within // 1000]}{_DIGITS[within % 1000]}Z"


def audit_record(
    context: AuthContext,
    error: AuthmwError | None,
    method: str,
    path: str,
    *,
    status: int | None = None,
    failure: AuthmwError | None = None,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """A JSON-ready record, timed by ``clock``; never holds secrets, signatures or the request body.

    For a request the pipeline let through, ``status`` is the answer's (say, the upstream's) and ``failure``
    what failed after the decision (the upstream did not answer: 502); the outcome stays the decision's."""
    principal = context.principal
    decision = context.decision
    refused = error or context.error
    answered = refused or failure
    record: dict[str, Any] = {
        "time": rfc3339(clock()),
        "event": "request",
        "request_id": context.request_id,
        "outcome": "deny" if refused is not None else "allow",
        "enforced": error is not None or context.error is None,
        "status": answered.status if answered is not None else status,
        "error_code": answered.code if answered is not None else None,
        "detail": answered.detail if answered is not None else None,
        "method": method,
        "path": path,
        "client": context.client,
        "route": None if context.route is None else context.route.name,
        "action": context.action,
        "resource": context.resource,
        "auth_method": None if context.auth_method is None else context.auth_method.value,
        "access_key": None if context.credential is None else context.credential.access_key,
        "user_id": None if principal is None else principal.user_id,
        "user_name": None if principal is None else principal.user_name,
        "domain": None if principal is None else principal.domain_name,
        "project_id": None if context.project is None else context.project.id,
        "workspace_id": context.workspace_id,
        "policy": None if decision is None else decision.policy,
        "statement": None if decision is None else decision.statement,
        "reason": None if decision is None else decision.reason,
        "agency": context.agency,
        "delegation": list(context.delegation),
    }
    return record


def audit_line(
    context: AuthContext,
    error: AuthmwError | None,
    method: str,
    path: str,
    *,
    status: int | None = None,
    failure: AuthmwError | None = None,
    clock: Callable[[], float] | None = None,
) -> str:
    """The :func:`audit_record` as one line of JSON: the same text ``json.dumps(record, separators=(",", ":"))``
    gives, from a memoised tail (the caller, route, workspace and decision) and head (the outcome and the method)
    around the request's own values. ``clock``: the time now, in seconds (default: the system clock, read in
    nanoseconds)."""
    refused = error or context.error
    answered = refused or failure
    if answered is None:
        head_key: tuple[Any, ...] = (status, method)
    else:
        enforced = error is not None or context.error is None
        head_key = (refused is not None, enforced, answered.status, answered.code, answered.detail, method)
    head = _HEADS.get(head_key)
    if head is None:
        record = audit_record(context, error, method, path, status=status, failure=failure)
        head = _members(record, _HEAD) + ',"method":' + _quoted(method)
        _HEADS.put(head_key, head)
    key = _tail_key(context)
    tail = _TAILS.get(key)
    if tail is None:
        tail = _members(audit_record(context, error, method, path), _TAIL)
        _TAILS.put(key, tail)
    client = context.client
    now = _stamp(time.time_ns() // 1000 if clock is None else _micros(clock()))
    return (
        f'{{"time":"{now}","event":"request","request_id":{_quoted(context.request_id)},{head},"path":'
        f'{_quoted(path)},"client":{"null" if client is None else _quoted(client)},{tail}}}'
    )


def _tail_key(context: AuthContext) -> tuple[Any, ...]:
    """Everything the :data:`_TAIL` values are made of (a test changes each and checks the line changes): plain
    strings, ints and None, cheap to hash (an enum hashes in Python: its id stands in, members are singletons)."""
    credential, principal, decision = context.credential, context.principal, context.decision
    route, project, workspace = context.route, context.project, context.workspace
    if (  # the common case, a signed or token request placed and decided: one flat tuple
        credential is not None
        and credential.session is None
        and principal is not None
        and decision is not None
        and route is not None
        and project is not None
        and workspace is not None
    ):
        return (
            *(route.method, route.template, context.action, context.resource, id(credential.method)),
            *(credential.access_key, principal.user_id, principal.user_name, principal.domain_name, project.id),
            *(workspace.id, decision.policy, decision.statement, decision.reason),
        )
    session = None if credential is None else credential.session
    return (  # any other: a tuple of another length, so never equal to the first kind
        None if route is None else route.name,
        context.action,
        context.resource,
        None if credential is None else (id(credential.method), credential.access_key),
        None if session is None else (session.agency_name, session.chain),  # temporary credentials: the agency's
        None if principal is None else (principal.user_id, principal.user_name, principal.domain_name),
        None if project is None else project.id,
        None if workspace is None else workspace.id,
        None if decision is None else (decision.policy, decision.statement, decision.reason),
    )


def _members(record: dict[str, Any], keys: tuple[str, ...]) -> str:
    """``keys`` of ``record`` as JSON object members (``"a":1,"b":null``), as json.dumps writes them."""
    return json.dumps({key: record[key] for key in keys}, separators=(",", ":"))[1:-1]


def send_to(sink: Sink | None) -> Sink | None:
    """Send every record to ``sink`` (one line of JSON per call) instead of :data:`AUDIT_LOGGER`; None: to the
    logger again. Returns the sink it replaces."""
    global _sink
    previous, _sink = _sink, sink
    return previous


def event_record(
    event: str,
    context: AuthContext,
    error: AuthmwError | None,
    method: str,
    path: str,
    *,
    status: int | None = None,
    **facts: Any,
) -> dict[str, Any]:
    """The record of an IAM endpoint ``event`` (one of :data:`EVENTS`): the request record's keys for the caller
    in ``context`` (``status`` overrides the refusal status, say a 404), then ``facts`` (no secrets: the caller
    passes ids, names, times and digests only)."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    record = audit_record(context, error, method, path)
    record["event"] = event
    if status is not None:
        record["status"] = status
    record.update(facts)
    return record


def log_event(
    event: str,
    context: AuthContext,
    error: AuthmwError | None,
    method: str,
    path: str,
    *,
    status: int | None = None,
    **facts: Any,
) -> None:
    """Write an IAM endpoint's :func:`event_record` to the sink, else to :data:`AUDIT_LOGGER` (and a 5xx of
    authmw's own for operators, as :func:`log_decision` does)."""
    if error is not None and error.status >= 500:
        _LOGGER.warning("%s (request %s): %s", error.code, context.request_id, error.detail)
    sink = _sink
    if sink is not None or AUDIT_LOGGER.isEnabledFor(logging.INFO):
        record = event_record(event, context, error, method, path, status=status, **facts)
        line = json.dumps(record, separators=(",", ":"))
        if sink is not None:
            sink(line)
        else:
            _write(line)


def _write(line: str) -> None:
    # makeRecord + handle: the same record .info() makes, without walking the stack for the caller.
    AUDIT_LOGGER.handle(AUDIT_LOGGER.makeRecord(AUDIT_LOGGER.name, logging.INFO, "authmw", 0, line, (), None))


def log_decision(
    context: AuthContext,
    error: AuthmwError | None,
    method: str,
    path: str,
    *,
    status: int | None = None,
    failure: AuthmwError | None = None,
) -> None:
    """Write the :func:`audit_line` to the sink, else to :data:`AUDIT_LOGGER` (built only when the logger would
    emit it); a
    refusal of authmw's own making (5xx: the store) is also logged for operators, with its cause."""
    if error is not None and error.status >= 500:
        _LOGGER.warning("%s (request %s): %s", error.code, context.request_id, error.detail)
    sink = _sink
    if sink is not None:
        sink(audit_line(context, error, method, path, status=status, failure=failure))
    elif AUDIT_LOGGER.isEnabledFor(logging.INFO):
        _write(audit_line(context, error, method, path, status=status, failure=failure))
