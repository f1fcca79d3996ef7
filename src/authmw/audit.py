"""The audit record of one decision (SPEC §10): who, what, where, the outcome and what decided it."""

from __future__ import annotations

import json
import logging
from typing import Any

from authmw.errors import AuthmwError
from authmw.guard import AuthContext

__all__ = ["AUDIT_LOGGER", "audit_record", "log_decision"]

#: The logger every adapter writes decisions to, one JSON object per record, at INFO.
AUDIT_LOGGER = logging.getLogger("authmw.audit")
_LOGGER = logging.getLogger("authmw")


def audit_record(context: AuthContext, error: AuthmwError | None, method: str, path: str) -> dict[str, Any]:
    """A JSON-ready record; never holds secrets, signatures or the request body."""
    principal = context.principal
    decision = context.decision
    refused = error or context.error
    record: dict[str, Any] = {
        "request_id": context.request_id,
        "outcome": "deny" if refused is not None else "allow",
        "enforced": error is not None or context.error is None,
        "status": refused.status if refused is not None else None,
        "error_code": refused.code if refused is not None else None,
        "detail": refused.detail if refused is not None else None,
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


def log_decision(context: AuthContext, error: AuthmwError | None, method: str, path: str) -> None:
    """Write the audit record to :data:`AUDIT_LOGGER` (built only when the logger would emit it); a failure
    of authmw's own (5xx: the store, the upstream) is also logged for operators, with its cause."""
    if error is not None and error.status >= 500:
        _LOGGER.warning("%s (request %s): %s", error.code, context.request_id, error.detail)
    if AUDIT_LOGGER.isEnabledFor(logging.INFO):
        line = json.dumps(audit_record(context, error, method, path), separators=(",", ":"))
        # makeRecord + handle: the same record .info() makes, without walking the stack for the caller.
        AUDIT_LOGGER.handle(AUDIT_LOGGER.makeRecord(AUDIT_LOGGER.name, logging.INFO, "authmw", 0, line, (), None))
