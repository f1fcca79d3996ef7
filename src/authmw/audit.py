"""The audit record of one decision (SPEC §10): who, what, where, the outcome and what decided it.

Every record has the same keys; ``time`` is when it was written, in RFC 3339 UTC with microseconds
(``2026-12-07T19:51:23.123456Z``); ``event`` says what it records: ``request`` (a request the pipeline checked), or
one of the IAM endpoints' :data:`EVENTS` (a login, a token checked or revoked, temporary credentials issued),
which add their own facts (:func:`event_record`). No record holds a password, token, secret key, security
token, signature, body or session policy text (a session policy is recorded by its SHA-256 digest).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from authmw.errors import AuthmwError
from authmw.models import AuthContext

__all__ = ["AUDIT_LOGGER", "EVENTS", "audit_record", "event_record", "log_decision", "log_event", "rfc3339"]

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


def rfc3339(seconds: float) -> str:
    """``seconds`` since the epoch in RFC 3339 UTC, to the microsecond: ``2026-12-07T19:51:23.123456Z``."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
    """Write an IAM endpoint's :func:`event_record` to :data:`AUDIT_LOGGER` (and a 5xx of authmw's own for
    operators, as :func:`log_decision` does)."""
    if error is not None and error.status >= 500:
        _LOGGER.warning("%s (request %s): %s", error.code, context.request_id, error.detail)
    if AUDIT_LOGGER.isEnabledFor(logging.INFO):
        _write(event_record(event, context, error, method, path, status=status, **facts))


def _write(record: dict[str, Any]) -> None:
    line = json.dumps(record, separators=(",", ":"))
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
    """Write the :func:`audit_record` to :data:`AUDIT_LOGGER` (built only when the logger would emit it); a
    refusal of authmw's own making (5xx: the store) is also logged for operators, with its cause."""
    if error is not None and error.status >= 500:
        _LOGGER.warning("%s (request %s): %s", error.code, context.request_id, error.detail)
    if AUDIT_LOGGER.isEnabledFor(logging.INFO):
        _write(audit_record(context, error, method, path, status=status, failure=failure))
