"""The ModelArts workspace API answered from authmw's store: ``/v1/{project_id}/workspaces`` create, list, show,
update and delete, in ModelArts' shapes, so ``huaweicloudsdkmodelarts``'s ``create_workspace`` ... manage the
workspaces the guard enforces (issue 15 item 2).

An ASGI app behind the guard: it reads the request's :class:`~authmw.models.AuthContext` from ``scope["authmw"]``
(the sidecar sets it once the guard admitted the request; :class:`authmw.asgi.AuthMiddleware` sets it for an app)
and answers the six routes of the ``modelarts`` preset it serves (the five above, and ``list_users``: the users of
the caller's domain, whom a workspace may be granted to) (:meth:`WorkspaceService.serves`); anything else
goes to ``app`` (404 without one). The guard has authorized the request by the route's ``modelarts:workspace:*``
action and, for one workspace, checked the caller may enter it; the service acts only on that decision (a refused
decision in dry-run mode is refused here: dry-run never changes the store). Changes go through the store's
administration verbs, the CLI's, so both follow one set of rules and every process sees them within a second.

Errors have ModelArts' shape, ``{"error_code", "error_msg"}``, with authmw's codes: ``ModelArts.4000`` (400, a
malformed body or query, or a value authmw does not keep: a description, an enterprise project other than
``"0"``, a federated or agency grant), ``ModelArts.4001`` (400, the change breaks a rule of the store: a name
taken or invalid, grants on a workspace that is not INTERNAL, the default workspace), ``ModelArts.4030`` (403)
and ``ModelArts.4040`` (404). Quotas (``/workspaces/{workspace_id}/quotas``) are the service's, not authmw's:
they go upstream, and so does ``validate_authorization`` (``POST .../workspaces/{id}/auth``).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from authmw.admission import ASGIApp, Receive, Scope, Send, read_body, send_error, send_response
from authmw.errors import ChangeRefused, NotFound
from authmw.models import AuthContext, Principal
from authmw.store import Store
from authmw.store.records import WorkspaceInfo
from authmw.workspaces import can_access_workspace

__all__ = ["WORKSPACE_OPERATIONS", "WorkspaceService"]

_LIST = "/v1/{project_id}/workspaces"
_ONE = "/v1/{project_id}/workspaces/{ws_id}"
#: (method, route template) → (operation, the action the guard must have decided): the routes served here.
WORKSPACE_OPERATIONS: Mapping[tuple[str, str], tuple[str, str]] = {
    ("POST", _LIST): ("create", "modelarts:workspace:create"),
    ("GET", _LIST): ("list", "modelarts:workspace:list"),
    ("GET", _ONE): ("show", "modelarts:workspace:get"),
    ("PUT", _ONE): ("update", "modelarts:workspace:update"),
    ("DELETE", _ONE): ("delete", "modelarts:workspace:delete"),
    # The users a workspace may be granted to (the SDK's list_users): the caller's domain's, as the store has them.
    ("GET", "/v1/{project_id}/workspaces/users/list"): ("users", "modelarts:workspace:list"),
}
_MAX_BODY = 256 * 1024  # a workspace with 500 grants is far smaller
_MAX_GRANTS = 500  # as ModelArts allows
_DIGITS = re.compile(r"[0-9]{1,7}")
_SORTS = ("name", "update_time", "status")
_JSON = [(b"content-type", b"application/json")]


class _Refused(Exception):
    """An answer in ModelArts' error shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _invalid(message: str) -> _Refused:
    return _Refused(400, "ModelArts.4000", message)


class WorkspaceService:
    """The workspace routes of the ``modelarts`` preset, answered from ``store`` for the caller the guard checked
    (``scope["authmw"]``); other requests go to ``app``. Wrap it with the guard's middleware:
    ``AuthMiddleware(WorkspaceService(store, app), guard=guard)``."""

    def __init__(self, store: Store, app: ASGIApp | None = None) -> None:
        self.store, self.app = store, app

    @staticmethod
    def serves(context: AuthContext | None) -> bool:
        """Whether the request ``context`` describes is one of the routes answered here."""
        route = None if context is None else context.route
        return route is not None and (route.method, route.template) in WORKSPACE_OPERATIONS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        context = scope.get("authmw")
        if scope["type"] != "http" or not isinstance(context, AuthContext) or not self.serves(context):
            if self.app is not None:
                await self.app(scope, receive, send)
            elif scope["type"] == "http":
                await send_response(send, 404, b"", [])
            return
        if context.error is not None:  # dry-run: the guard refused; the store is never changed on a refusal
            await send_error(scope, send, context.error, context.request_id)
            return
        body = await read_body(scope, receive, _MAX_BODY)
        if body is None:
            return
        query = scope.get("query_string", b"").decode("latin-1")
        status, payload = await asyncio.to_thread(self.answer, context, scope["path"], query, body)
        await send_response(send, status, json.dumps(payload).encode(), _JSON)

    def answer(self, context: AuthContext, path: str, query: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """The status and JSON body of a request the guard admitted (``path`` as decoded, ``query`` raw)."""
        try:
            return self._answer(context, path, query, body)
        except _Refused as refused:
            return refused.status, _error(refused.code, refused.message, context.request_id)
        except NotFound as exc:
            return 404, _error("ModelArts.4040", str(exc), context.request_id)
        except ChangeRefused as exc:
            return 400, _error("ModelArts.4001", str(exc), context.request_id)

    def _answer(self, context: AuthContext, path: str, query: str, body: bytes) -> tuple[int, dict[str, Any]]:
        assert context.route is not None
        operation, action = WORKSPACE_OPERATIONS[(context.route.method, context.route.template)]
        principal = context.principal
        # The guard decided the route's action: anything else (a route table that maps these routes otherwise,
        # or none) is not an authorization to change the store.
        if principal is None or action not in context.actions:
            raise _Refused(403, "ModelArts.4030", f"the request was not authorized for {action}")
        domain = principal.domain_name
        if operation == "create":
            return 200, self._create(principal, context.agency, _object(body))
        if operation == "list":
            return 200, self._list(principal, query)
        if operation == "users":
            return 200, {"users": [{"userName": user.name} for user in self.store.list_users(domain=domain)]}
        workspace_id = path.rstrip("/").rpartition("/")[2]
        if context.workspace is None or context.workspace.id != workspace_id:  # the guard checked this one
            raise _Refused(403, "ModelArts.4030", "the workspace was not checked by the guard")
        if operation == "show":
            info = self.store.show_workspace(workspace_id, domain=domain)
            return 200, self._view(info, domain, grants=True)
        if operation == "update":
            fields = _object(body)
            _check_kept(fields)
            users = None if fields.get("grants") is None else self._grant_names(fields["grants"], domain)
            auth_type, name = _text_field(fields, "auth_type"), _text_field(fields, "name")
            self.store.update_workspace(workspace_id, domain=domain, auth_type=auth_type, name=name, users=users)
            return 200, {"workspace_id": workspace_id}
        self.store.delete_workspace(workspace_id, domain=domain)
        return 200, {"workspace_id": workspace_id}

    def _create(self, principal: Principal, agency: str | None, fields: dict[str, Any]) -> dict[str, Any]:
        _check_kept(fields)
        name = _text_field(fields, "name")
        if name is None:
            raise _invalid("name is required")
        domain = principal.domain_name
        grants = fields.get("grants")
        users = [] if grants is None else self._grant_names(grants, domain)
        info = self.store.create_workspace(
            name,
            domain=domain,
            auth_type=_text_field(fields, "auth_type") or "PUBLIC",
            owner=None if agency is not None else principal.user_name,  # an agency is no user to own it
            grant_users=users,
        )
        return self._view(info, domain, grants=True)

    def _list(self, principal: Principal, query: str) -> dict[str, Any]:
        params = _query(query)
        offset, limit = _count(params, "offset", 0, 0), _count(params, "limit", 1000, 1)
        sort_by, order = params.get("sort_by", "name"), params.get("order", "desc")
        if sort_by not in _SORTS or order not in ("asc", "desc"):
            raise _invalid("sort_by must be name, update_time or status; order asc or desc")
        accessible = params.get("filter_accessible", "false").lower()
        if accessible not in ("true", "false"):
            raise _invalid("filter_accessible must be true or false")
        domain = principal.domain_name
        found = self.store.list_workspaces(domain=domain)
        if "name" in params:
            found = [w for w in found if params["name"] in w.name]
        if params.get("enterprise_project_id", "0") != "0":
            found = []
        if accessible == "true":
            found = [
                w for w in found if can_access_workspace(principal, self.store.find_workspace(w.id, domain=domain))
            ]
        key = "name" if sort_by == "name" else "created_at"  # every workspace is NORMAL: by name within status
        found.sort(key=lambda w: (getattr(w, key) or 0, w.name), reverse=order == "desc")
        page = found[offset : offset + limit]
        views = [self._view(w, domain, grants=False) for w in page]
        return {"total_count": len(found), "count": len(views), "workspaces": views}

    def _grant_names(self, grants: object, domain: str) -> list[str]:
        """The user names a ModelArts ``grants`` list names (``user_id`` first, as ModelArts reads it)."""
        if not isinstance(grants, list) or len(grants) > _MAX_GRANTS:
            raise _invalid(f"grants must be a list of at most {_MAX_GRANTS} objects")
        users = self.store.list_users(domain=domain) if grants else []
        by_id, known = {u.id: u.name for u in users}, {u.name for u in users}
        names = []
        for grant in grants:
            if not isinstance(grant, dict):
                raise _invalid("each grant is an object with user_id or user_name")
            if grant.get("user_type") not in (None, "", "IAM"):
                raise _invalid("only IAM users can be granted a workspace (user_type IAM)")
            user_id, user_name = grant.get("user_id"), grant.get("user_name")
            if user_id:
                if not isinstance(user_id, str) or user_id not in by_id:
                    raise _invalid("a granted user_id is not a user of the domain")
                names.append(by_id[user_id])
            elif user_name and isinstance(user_name, str):
                if user_name not in known:
                    raise _invalid("a granted user_name is not a user of the domain")
                names.append(user_name)
            else:
                raise _invalid("each grant names user_id or user_name")
        return names

    def _view(self, info: WorkspaceInfo, domain: str, *, grants: bool) -> dict[str, Any]:
        """ModelArts' ``WorkspaceResponse`` of ``info`` (with ``grants``: the granted users)."""
        millis = (info.created_at or 0) * 1000
        view: dict[str, Any] = {
            "id": info.id,
            "name": info.name,
            "description": "",
            "owner": info.owner or "",
            "auth_type": info.auth_type,
            "enterprise_project_id": "0",
            "enterprise_project_name": "default",
            "create_time": millis,
            "update_time": millis,
            "status": "NORMAL",
            "status_info": "",
        }
        if grants:
            users = [g.partition(":")[2] for g in info.grants if g.startswith("user:")]
            ids = {u.name: u.id for u in self.store.list_users(domain=domain)} if users else {}
            view["grants"] = [{"user_id": ids.get(u, ""), "user_name": u} for u in users]
        return view


def _error(code: str, message: str, request_id: str) -> dict[str, Any]:
    return {"error_code": code, "error_msg": message, "request_id": request_id}


def _object(body: bytes) -> dict[str, Any]:
    try:
        fields = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        raise _invalid("the body must be a JSON object") from None
    if not isinstance(fields, dict):
        raise _invalid("the body must be a JSON object")
    return fields


def _text_field(fields: Mapping[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is not None and not isinstance(value, str):
        raise _invalid(f"{name} must be a string")
    return value


def _check_kept(fields: Mapping[str, Any]) -> None:
    """Refuse what authmw's store does not keep, rather than drop it silently."""
    description = _text_field(fields, "description")
    if description:
        raise _invalid("authmw keeps no workspace description: leave description empty")
    if _text_field(fields, "enterprise_project_id") not in (None, "", "0"):
        raise _invalid('authmw has no enterprise projects: leave enterprise_project_id empty or "0"')


def _query(query: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False, errors="strict")
    except UnicodeDecodeError:
        raise _invalid("the query is not valid UTF-8") from None
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise _invalid(f"{key} is given twice")
        params[key] = value
    return params


def _count(params: Mapping[str, str], name: str, default: int, low: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    if not _DIGITS.fullmatch(text) or not low <= int(text):
        raise _invalid(f"{name} must be an integer from {low}")
    return int(text)
