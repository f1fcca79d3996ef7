"""The IAM v3 administration API (what ``huaweicloudsdkiam`` calls) as an ASGI app, in Huawei's shapes.

Projects, users, groups and their members, permanent access keys, custom policies (``OS-ROLE`` roles) granted to
groups, and agencies with their policies, each call authorized by its IAM action (``iam:users:createUser``, ...,
see :data:`ROUTES`) through the caller's own authmw policies: the system policy ``Security Administrator``
(``iam:*:*``) attached to the domain's ``admin`` group grants them all. Every caller is authenticated as the
pipeline authenticates (AK/SK signature, IAM token or temporary credentials), acts inside its own domain only,
and every call writes one ``iam_admin`` audit record. The rules live in the store's administration verbs, which
the CLI calls too: this module parses, resolves Huawei's ids to the store's names, and answers.

``/v3/auth/tokens`` and ``/v3.0/OS-CREDENTIAL/securitytokens`` are handed to the :class:`TokenService` given.
Mount it in an ASGI app with :func:`with_iam_admin` (IAM paths here, everything else to the app); the sidecar
serves it (:func:`is_iam_path` decides which paths). A policy granted to a group or an agency on a project
applies to requests in that project only, as IAM's project-level grants do.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from urllib.parse import parse_qs

from authmw.admission import ASGIApp, Receive, Scope, Send, read_body, request_from_scope, send_error, send_response
from authmw.audit import log_event
from authmw.errors import (
    ActionDenied,
    AddressNotAllowed,
    AdminChangeRefused,
    AuthmwError,
    ChangeRefused,
    MalformedBody,
    NotFound,
    ResourceNotFound,
    UnsignedPayloadRefused,
)
from authmw.guard import Guard
from authmw.iam_api import SECURITY_TOKENS_PATH, TOKENS_PATH, AttemptLimiter
from authmw.identity import policy_facts
from authmw.models import AuthContext, Credential, Principal, WhitelistScope
from authmw.routes import Access, Match, Route, RouteCatalog, check_allowed, parse_path
from authmw.store import Store
from authmw.store.records import AccessKeyInfo, Agency, GroupDetail, PolicyDetail, Project, User
from authmw.tokens import iso_time

__all__ = ["ROUTES", "IamAdmin", "is_iam_path", "with_iam_admin"]

_MAX_BODY = 64 * 1024
_PREFIXES = (
    "/v3/projects",
    "/v3/users",
    "/v3/groups",
    "/v3/domains/",
    "/v3.0/OS-CREDENTIAL/credentials",
    "/v3.0/OS-ROLE/roles",
    "/v3.0/OS-AGENCY/",
)
_Answer = tuple[int, Any]  # status, JSON payload (None: no body)
_T = TypeVar("_T")

_GROUP_ROLES = "/v3/domains/{domain_id}/groups/{group_id}/roles"
_AGENCY_ROLES = "/v3.0/OS-AGENCY/domains/{domain_id}/agencies/{agency_id}/roles"
_GROUP_ON_PROJECT = "/v3/projects/{project_id}/groups/{group_id}/roles"
_AGENCY_ON_PROJECT = "/v3.0/OS-AGENCY/projects/{project_id}/agencies/{agency_id}/roles"
_P = "iam:permissions:"
#: (method, path template, IAM action, handler): the actions are named as in Huawei's IAM API reference.
ROUTES: tuple[tuple[str, str, str, str], ...] = (
    ("POST", "/v3/projects", "iam:projects:createProject", "create_project"),
    ("GET", "/v3/projects", "iam:projects:listProjects", "list_projects"),
    ("GET", "/v3/projects/{project_id}", "iam:projects:getProject", "show_project"),
    ("POST", "/v3/users", "iam:users:createUser", "create_user"),
    ("GET", "/v3/users", "iam:users:listUsers", "list_users"),
    ("GET", "/v3/users/{user_id}", "iam:users:getUser", "show_user"),
    ("PATCH", "/v3/users/{user_id}", "iam:users:updateUser", "update_user"),
    ("DELETE", "/v3/users/{user_id}", "iam:users:deleteUser", "delete_user"),
    ("POST", "/v3/users/{user_id}/password", "", "change_password"),  # the user itself: no action
    ("GET", "/v3/users/{user_id}/groups", "iam:groups:listGroupsForUser", "user_groups"),
    ("POST", "/v3/groups", "iam:groups:createGroup", "create_group"),
    ("GET", "/v3/groups", "iam:groups:listGroups", "list_groups"),
    ("GET", "/v3/groups/{group_id}", "iam:groups:getGroup", "show_group"),
    ("DELETE", "/v3/groups/{group_id}", "iam:groups:deleteGroup", "delete_group"),
    ("GET", "/v3/groups/{group_id}/users", "iam:users:listUsersForGroup", "group_users"),
    ("PUT", "/v3/groups/{group_id}/users/{user_id}", _P + "addUserToGroup", "add_member"),
    ("HEAD", "/v3/groups/{group_id}/users/{user_id}", _P + "checkUserInGroup", "check_member"),
    ("DELETE", "/v3/groups/{group_id}/users/{user_id}", _P + "removeUserFromGroup", "remove_member"),
    ("POST", "/v3.0/OS-CREDENTIAL/credentials", "iam:credentials:createCredential", "create_key"),
    ("GET", "/v3.0/OS-CREDENTIAL/credentials", "iam:credentials:listCredentials", "list_keys"),
    ("GET", "/v3.0/OS-CREDENTIAL/credentials/{access_key}", "iam:credentials:getCredential", "show_key"),
    ("PUT", "/v3.0/OS-CREDENTIAL/credentials/{access_key}", "iam:credentials:updateCredential", "update_key"),
    ("DELETE", "/v3.0/OS-CREDENTIAL/credentials/{access_key}", "iam:credentials:deleteCredential", "delete_key"),
    ("POST", "/v3.0/OS-ROLE/roles", "iam:roles:createRole", "create_role"),
    ("GET", "/v3.0/OS-ROLE/roles", "iam:roles:listRoles", "list_roles"),
    ("GET", "/v3.0/OS-ROLE/roles/{role_id}", "iam:roles:getRole", "show_role"),
    ("PATCH", "/v3.0/OS-ROLE/roles/{role_id}", "iam:roles:updateRole", "update_role"),
    ("DELETE", "/v3.0/OS-ROLE/roles/{role_id}", "iam:roles:deleteRole", "delete_role"),
    ("GET", _GROUP_ROLES, _P + "listRolesForGroupOnDomain", "group_roles"),
    ("PUT", _GROUP_ROLES + "/{role_id}", _P + "grantRoleToGroupOnDomain", "grant_group"),
    ("HEAD", _GROUP_ROLES + "/{role_id}", _P + "checkRoleForGroupOnDomain", "check_group_grant"),
    ("DELETE", _GROUP_ROLES + "/{role_id}", _P + "revokeRoleFromGroupOnDomain", "revoke_group"),
    ("GET", _GROUP_ON_PROJECT, _P + "listRolesForGroupOnProject", "group_project_roles"),
    ("PUT", _GROUP_ON_PROJECT + "/{role_id}", _P + "grantRoleToGroupOnProject", "grant_group_project"),
    ("HEAD", _GROUP_ON_PROJECT + "/{role_id}", _P + "checkRoleForGroupOnProject", "check_group_project_grant"),
    ("DELETE", _GROUP_ON_PROJECT + "/{role_id}", _P + "revokeRoleFromGroupOnProject", "revoke_group_project"),
    ("POST", "/v3.0/OS-AGENCY/agencies", "iam:agencies:createAgency", "create_agency"),
    ("GET", "/v3.0/OS-AGENCY/agencies", "iam:agencies:listAgencies", "list_agencies"),
    ("GET", "/v3.0/OS-AGENCY/agencies/{agency_id}", "iam:agencies:getAgency", "show_agency"),
    ("PUT", "/v3.0/OS-AGENCY/agencies/{agency_id}", "iam:agencies:updateAgency", "update_agency"),
    ("DELETE", "/v3.0/OS-AGENCY/agencies/{agency_id}", "iam:agencies:deleteAgency", "delete_agency"),
    ("GET", _AGENCY_ROLES, _P + "listRolesForAgencyOnDomain", "agency_roles"),
    ("PUT", _AGENCY_ROLES + "/{role_id}", _P + "grantRoleToAgencyOnDomain", "grant_agency"),
    ("HEAD", _AGENCY_ROLES + "/{role_id}", _P + "checkRoleForAgencyOnDomain", "check_agency_grant"),
    ("DELETE", _AGENCY_ROLES + "/{role_id}", _P + "revokeRoleFromAgencyOnDomain", "revoke_agency"),
    ("GET", _AGENCY_ON_PROJECT, _P + "listRolesForAgencyOnProject", "agency_project_roles"),
    ("PUT", _AGENCY_ON_PROJECT + "/{role_id}", _P + "grantRoleToAgencyOnProject", "grant_agency_project"),
    ("HEAD", _AGENCY_ON_PROJECT + "/{role_id}", _P + "checkRoleForAgencyOnProject", "check_agency_project_grant"),
    ("DELETE", _AGENCY_ON_PROJECT + "/{role_id}", _P + "revokeRoleFromAgencyOnProject", "revoke_agency_project"),
)  # fmt: skip


def is_iam_path(path: str) -> bool:
    """Whether ``path`` is the IAM API's (tokens, security tokens, or the administration API)."""
    return path in (TOKENS_PATH, SECURITY_TOKENS_PATH) or path.startswith(_PREFIXES)


def with_iam_admin(app: ASGIApp, admin: IamAdmin) -> ASGIApp:
    """An ASGI app that serves the IAM paths with ``admin`` and hands everything else to ``app`` (say, the app
    wrapped in :class:`authmw.asgi.AuthMiddleware`)."""

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_iam_path(scope.get("path", "")):
            await admin(scope, receive, send)
        else:
            await app(scope, receive, send)

    return dispatch


@dataclass(frozen=True, slots=True)
class _Call:
    """One authorized call: who asks (in which domain), the path parameters, the query and the JSON body."""

    principal: Principal
    credential: Credential
    client: str | None
    params: Mapping[str, str]
    query: Mapping[str, list[str]]
    body: Any

    @property
    def domain(self) -> str:
        return self.principal.domain_name

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


class IamAdmin:
    """The IAM administration API over ``store``; callers are authenticated by ``guard`` (as the pipeline does)
    and authorized by their policies. ``tokens`` serves the token paths (None: they answer 404); ``limiter``
    bounds password checks of ``POST /v3/users/{id}/password`` (the token service's, so both count together)."""

    def __init__(
        self,
        store: Store,
        guard: Guard,
        *,
        tokens: ASGIApp | None = None,
        limiter: AttemptLimiter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.guard, self.tokens, self._clock = store, guard, tokens, clock
        self.limiter = limiter or getattr(tokens, "limiter", None) or AttemptLimiter()
        self.routes = RouteCatalog(
            Route(method, path, action) if action else Route(method, path, access=Access.AUTHENTICATE_ONLY)
            for method, path, action, _ in ROUTES
        )
        self._handlers = {f"{method} {path}": handler for method, path, _, handler in ROUTES}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if path in (TOKENS_PATH, SECURITY_TOKENS_PATH):
            if self.tokens is not None:
                await self.tokens(scope, receive, send)
            else:
                await send_response(send, 404, b"", [])
            return
        peer = scope.get("client")
        request_id = os.urandom(12).hex()
        context = AuthContext(request_id, peer[0] if peer else None)
        method = scope.get("method", "")
        status: int | None = None
        try:
            parsed = parse_path(path)
            match = self.routes.match(method, parsed.segments)
            if match is None or (method == "HEAD" and match.route.method != "HEAD"):
                await _send_json(send, 404, _error("not_found", "no such IAM API", request_id), request_id)
                return
            check_allowed(parsed, match.route, strict=True)
            context = AuthContext(request_id, context.client, route=match.route, action=match.route.action)
            body = await read_body(scope, receive, _MAX_BODY)
            if body is None:
                return
            request = request_from_scope(scope, body)
            client = self.guard.proxies.client_address(context.client, request.headers)
            credential, principal = await asyncio.to_thread(self.guard.authenticate, request)
            if body and credential.unsigned_payload:  # the body says what changes: it must be what was signed
                raise UnsignedPayloadRefused("a request of the IAM API with a body must sign it")
            context = self._authorize(context, match, client, credential, principal)
            call = _Call(principal, credential, client, match.params, _query(scope), _json(body))
            handler = getattr(self, "_" + self._handlers[match.route.name])
            status, payload = await asyncio.to_thread(handler, call)
        except (AdminChangeRefused, ResourceNotFound) as exc:  # the administrator is told why
            log_event("iam_admin", context, None, method, path, status=exc.status, refused=exc.code)
            await _send_json(send, exc.status, _error(exc.code, exc.detail, request_id), request_id)
            return
        except AuthmwError as exc:
            log_event("iam_admin", exc.context or context, exc, method, path)
            await send_error(scope, send, exc, request_id)
            return
        log_event("iam_admin", context, None, method, path, status=status)
        await _send_json(send, status, payload, request_id)

    def _authorize(
        self, context: AuthContext, match: Match, client: str | None, credential: Credential, principal: Principal
    ) -> AuthContext:
        """The caller's user whitelist (and an agency caller's), then the route's action by its policies."""
        session = credential.session
        callers = [principal.user_id, *(() if session is None or session.agency_id is None else (session.user_id,))]
        context = AuthContext(
            context.request_id,
            client,
            route=match.route,
            action=match.route.action,
            principal=principal,
            credential=credential,
            policy_context=policy_facts(
                principal,
                current_time=iso_time(int(self._clock()), micros=False),
                mfa=credential.mfa or (session is not None and session.mfa),
                source_ip=client,
            ),
        )
        for user_id in callers:
            if not self.guard.identity.whitelist(WhitelistScope.USER, user_id).allows(client):
                error = AddressNotAllowed("client address not in the caller's user whitelist")
                error.context = context
                raise error
        if not match.route.action:  # the handler allows the caller itself only
            return context
        return replace(context, decision=self.guard.authorize(context, match.route.action))

    # -- projects -------------------------------------------------------------------------------------------

    def _create_project(self, call: _Call) -> _Answer:
        fields = _object(call.body, "project")
        _same_domain(call, fields.get("domain_id"))
        project = _store(lambda: self.store.create_project(_text(fields, "name"), domain=call.domain))
        return 201, {"project": _project(project)}

    def _list_projects(self, call: _Call) -> _Answer:
        projects = _store(lambda: self.store.list_projects(domain=call.domain))
        name = call.arg("name")
        shown = [_project(p) for p in projects if name is None or p.name == name]
        return 200, {"projects": shown, "links": {"self": "/v3/projects"}}

    def _show_project(self, call: _Call) -> _Answer:
        project = _store(lambda: self.store.find_project(call.params["project_id"], domain=call.domain))
        return 200, {"project": _project(project)}

    # -- users ----------------------------------------------------------------------------------------------

    def _create_user(self, call: _Call) -> _Answer:
        fields = _object(call.body, "user")
        _same_domain(call, fields.get("domain_id"))
        name, password = _text(fields, "name"), _optional_text(fields, "password")
        enabled = _optional_bool(fields, "enabled")
        user = _store(lambda: self.store.create_user(name, domain=call.domain, password=password))
        if enabled is False:
            user = _store(lambda: self.store.update_user(name, domain=call.domain, enabled=False))
        return 201, {"user": _user(user)}

    def _list_users(self, call: _Call) -> _Answer:
        users = _store(lambda: self.store.list_users(domain=call.domain))
        name, enabled = call.arg("name"), call.arg("enabled")
        shown = [
            _user(u)
            for u in users
            if (name is None or u.name == name) and (enabled is None or str(u.enabled).lower() == enabled.lower())
        ]
        return 200, {"users": shown, "links": {"self": "/v3/users"}}

    def _show_user(self, call: _Call) -> _Answer:
        return 200, {"user": _user(self._user(call))}

    def _update_user(self, call: _Call) -> _Answer:
        user = self._user(call)
        fields = _object(call.body, "user")
        if fields.get("name", user.name) != user.name:
            raise MalformedBody("a user cannot be renamed")
        password, enabled = _optional_text(fields, "password"), _optional_bool(fields, "enabled")
        updated = _store(
            lambda: self.store.update_user(user.name, domain=call.domain, enabled=enabled, password=password)
        )
        return 200, {"user": _user(updated)}

    def _delete_user(self, call: _Call) -> _Answer:
        user = self._user(call)
        _store(lambda: self.store.delete_user(user.name, domain=call.domain))
        return 204, None

    def _change_password(self, call: _Call) -> _Answer:
        """A user's own password (Huawei's "changing the login password"): the old one is checked first, as a
        login attempt is, against the same limits."""
        user = self._user(call)
        if user.id != call.principal.user_id:
            raise ActionDenied("only the user may change its password this way (administrators: PATCH the user)")
        fields = _object(call.body, "user")
        new, old = _text(fields, "password"), _text(fields, "original_password")
        attempt = self.limiter.reserve(f"{user.domain_id}/{user.id}", call.client)
        try:
            found = self.store.check_password(user.name, old, domain=call.domain)
        except BaseException:
            attempt.release()
            raise
        if found is None:
            attempt.failed()
            raise ActionDenied("the original password is wrong")
        attempt.succeeded()
        _store(lambda: self.store.update_user(user.name, domain=call.domain, password=new))
        return 204, None

    def _user_groups(self, call: _Call) -> _Answer:
        user = self._user(call)
        detail = _store(lambda: self.store.show_user(user.name, domain=call.domain))
        groups = [_group(g) for g in self._groups(call) if g.name in detail.groups]
        return 200, {"groups": groups, "links": {"self": f"/v3/users/{user.id}/groups"}}

    # -- groups and members ---------------------------------------------------------------------------------

    def _create_group(self, call: _Call) -> _Answer:
        fields = _object(call.body, "group")
        _same_domain(call, fields.get("domain_id"))
        group = _store(lambda: self.store.create_group(_text(fields, "name"), domain=call.domain))
        return 201, {"group": {"id": group.id, "name": group.name, "domain_id": group.domain_id, "description": ""}}

    def _list_groups(self, call: _Call) -> _Answer:
        name = call.arg("name")
        groups = [_group(g) for g in self._groups(call) if name is None or g.name == name]
        return 200, {"groups": groups, "links": {"self": "/v3/groups"}}

    def _show_group(self, call: _Call) -> _Answer:
        return 200, {"group": _group(self._group(call))}

    def _delete_group(self, call: _Call) -> _Answer:
        group = self._group(call)
        _store(lambda: self.store.delete_group(group.name, domain=call.domain))
        return 204, None

    def _group_users(self, call: _Call) -> _Answer:
        group = self._group(call)
        users = [_user(u) for u in _store(lambda: self.store.list_users(domain=call.domain)) if u.name in group.users]
        return 200, {"users": users, "links": {"self": f"/v3/groups/{group.id}/users"}}

    def _add_member(self, call: _Call) -> _Answer:
        group, user = self._group(call), self._user(call)
        _store(lambda: self.store.add_user_to_group(group.name, user.name, domain=call.domain))
        return 204, None

    def _check_member(self, call: _Call) -> _Answer:
        group, user = self._group(call), self._user(call)
        if user.name not in group.users:
            raise ResourceNotFound("the user is not in the group")
        return 204, None

    def _remove_member(self, call: _Call) -> _Answer:
        group, user = self._group(call), self._user(call)
        _store(lambda: self.store.remove_user_from_group(group.name, user.name, domain=call.domain))
        return 204, None

    # -- permanent access keys ------------------------------------------------------------------------------

    def _create_key(self, call: _Call) -> _Answer:
        fields = _object(call.body, "credential")
        user = self._user_by_id(call, _text(fields, "user_id"))
        created = _store(lambda: self.store.create_access_key(user.name, domain=call.domain))
        key = self._key(call, created.access)
        return 201, {"credential": {**_credential(key, user.id), "secret": created.secret}}

    def _list_keys(self, call: _Call) -> _Answer:
        wanted = call.arg("user_id")
        users = (
            [self._user_by_id(call, wanted)] if wanted else _store(lambda: self.store.list_users(domain=call.domain))
        )
        return 200, {"credentials": [_credential(key, user.id) for user in users for key in self._keys(call, user)]}

    def _show_key(self, call: _Call) -> _Answer:
        key = self._key(call, call.params["access_key"])
        return 200, {"credential": _credential(key, self._user_id_of(call, key.user))}

    def _update_key(self, call: _Call) -> _Answer:
        fields = _object(call.body, "credential")
        status = _optional_text(fields, "status")
        if status not in (None, "active", "inactive"):
            raise MalformedBody('credential.status must be "active" or "inactive"')
        access = call.params["access_key"]
        key = self._key(call, access)
        if status is not None:
            key = _store(lambda: self.store.set_access_key_status(access, status == "active", domain=call.domain))
        return 200, {"credential": _credential(key, self._user_id_of(call, key.user))}

    def _delete_key(self, call: _Call) -> _Answer:
        _store(lambda: self.store.delete_access_key(call.params["access_key"], domain=call.domain))
        return 204, None

    # -- custom policies and their grants -------------------------------------------------------------------

    def _create_role(self, call: _Call) -> _Answer:
        fields = _object(call.body, "role")
        name, document = _text(fields, "display_name"), _policy(fields)
        _store(lambda: self.store.create_policy(name, document, domain=call.domain))
        return 201, {"role": _role(self._role_named(call, name), call.principal.domain_id)}

    def _list_roles(self, call: _Call) -> _Answer:
        roles = [_role(p, call.principal.domain_id) for p in self._roles(call) if p.domain is not None]
        return 200, {"roles": roles, "links": {"self": "/v3.0/OS-ROLE/roles"}, "total_number": len(roles)}

    def _show_role(self, call: _Call) -> _Answer:
        return 200, {"role": _role(self._role(call), call.principal.domain_id)}

    def _update_role(self, call: _Call) -> _Answer:
        role = self._role(call)
        fields = _object(call.body, "role")
        if fields.get("display_name", role.name) != role.name:
            raise MalformedBody("a custom policy cannot be renamed")
        _store(lambda: self.store.update_policy(role.name, _policy(fields), domain=call.domain))
        return 200, {"role": _role(self._role_named(call, role.name), call.principal.domain_id)}

    def _delete_role(self, call: _Call) -> _Answer:
        role = self._role(call)
        _store(lambda: self.store.delete_policy(role.name, domain=call.domain))
        return 200, {}

    def _group_roles(self, call: _Call) -> _Answer:
        self._domain_param(call)
        group = self._group(call)
        roles = [_role(p, call.principal.domain_id) for p in self._roles(call) if p.name in group.policies]
        return 200, {"roles": roles, "links": {"self": ""}}

    def _grant_group(self, call: _Call) -> _Answer:
        self._domain_param(call)
        group, role = self._group(call), self._role(call)
        _store(lambda: self.store.attach_policy(role.name, group=group.name, domain=call.domain))
        return 204, None

    def _check_group_grant(self, call: _Call) -> _Answer:
        self._domain_param(call)
        group, role = self._group(call), self._role(call)
        if role.name not in group.policies:
            raise ResourceNotFound("the policy is not granted to the group")
        return 204, None

    def _revoke_group(self, call: _Call) -> _Answer:
        self._domain_param(call)
        group, role = self._group(call), self._role(call)
        _store(lambda: self.store.detach_policy(role.name, group=group.name, domain=call.domain))
        return 204, None

    # A grant on a project applies to requests in that project only (the store reads it with a g:ProjectId
    # condition on each statement); the project is one of the caller's domain, by id.

    def _group_project_roles(self, call: _Call) -> _Answer:
        return 200, {"roles": self._project_roles(call, "group"), "links": {"self": ""}}

    def _grant_group_project(self, call: _Call) -> _Answer:
        return self._project_grant(call, "group", self.store.attach_policy)

    def _check_group_project_grant(self, call: _Call) -> _Answer:
        return self._check_project_grant(call, "group")

    def _revoke_group_project(self, call: _Call) -> _Answer:
        return self._project_grant(call, "group", self.store.detach_policy)

    def _holder(self, call: _Call, kind: str) -> dict[str, str]:
        """The group or agency a project grant hangs on, as the store's keyword (``group=NAME``)."""
        return {kind: (self._group(call) if kind == "group" else self._agency(call)).name}

    def _granted_on_project(self, call: _Call, holder: dict[str, str]) -> tuple[str, ...]:
        project = call.params["project_id"]
        return _store(lambda: self.store.project_grants(project, **holder, domain=call.domain))

    def _project_roles(self, call: _Call, kind: str) -> list[dict[str, Any]]:
        granted = self._granted_on_project(call, self._holder(call, kind))
        return [_role(p, call.principal.domain_id) for p in self._roles(call) if p.name in granted]

    def _project_grant(self, call: _Call, kind: str, change: Callable[..., None]) -> _Answer:
        holder, role, project = self._holder(call, kind), self._role(call), call.params["project_id"]
        _store(lambda: change(role.name, **holder, project=project, domain=call.domain))
        return 204, None

    def _check_project_grant(self, call: _Call, kind: str) -> _Answer:
        holder, role = self._holder(call, kind), self._role(call)
        if role.name not in self._granted_on_project(call, holder):
            raise ResourceNotFound(f"the policy is not granted to the {kind} on the project")
        return 204, None

    # -- agencies -------------------------------------------------------------------------------------------

    def _create_agency(self, call: _Call) -> _Answer:
        fields = _object(call.body, "agency")
        _same_domain(call, fields.get("domain_id"))
        name, trust = _text(fields, "name"), self._trust(fields)
        if trust is None:
            raise MalformedBody("agency.trust_domain_name or agency.trust_domain_id is required")
        agency = _store(lambda: self.store.create_agency(name, trust=trust, domain=call.domain))
        return 201, {"agency": self._agency_shape(agency)}

    def _list_agencies(self, call: _Call) -> _Answer:
        name = call.arg("name")
        agencies = [self._agency_shape(a) for a in self._agencies(call) if name is None or a.name == name]
        return 200, {"agencies": agencies}

    def _show_agency(self, call: _Call) -> _Answer:
        return 200, {"agency": self._agency_shape(self._agency(call))}

    def _update_agency(self, call: _Call) -> _Answer:
        agency = self._agency(call)
        fields = _object(call.body, "agency")
        trust = self._trust(fields)
        updated = _store(lambda: self.store.update_agency(agency.name, domain=call.domain, trust=trust))
        return 200, {"agency": self._agency_shape(updated)}

    def _delete_agency(self, call: _Call) -> _Answer:
        agency = self._agency(call)
        _store(lambda: self.store.delete_agency(agency.name, domain=call.domain))
        return 204, None

    def _agency_roles(self, call: _Call) -> _Answer:
        self._domain_param(call)
        agency = self._agency(call)
        roles = [_role(p, call.principal.domain_id) for p in self._roles(call) if p.name in agency.policies]
        return 200, {"roles": roles}

    def _grant_agency(self, call: _Call) -> _Answer:
        self._domain_param(call)
        agency, role = self._agency(call), self._role(call)
        _store(lambda: self.store.attach_policy(role.name, agency=agency.name, domain=call.domain))
        return 204, None

    def _check_agency_grant(self, call: _Call) -> _Answer:
        self._domain_param(call)
        agency, role = self._agency(call), self._role(call)
        if role.name not in agency.policies:
            raise ResourceNotFound("the policy is not granted to the agency")
        return 204, None

    def _revoke_agency(self, call: _Call) -> _Answer:
        self._domain_param(call)
        agency, role = self._agency(call), self._role(call)
        _store(lambda: self.store.detach_policy(role.name, agency=agency.name, domain=call.domain))
        return 204, None

    def _agency_project_roles(self, call: _Call) -> _Answer:
        return 200, {"roles": self._project_roles(call, "agency")}

    def _grant_agency_project(self, call: _Call) -> _Answer:
        return self._project_grant(call, "agency", self.store.attach_policy)

    def _check_agency_project_grant(self, call: _Call) -> _Answer:
        return self._check_project_grant(call, "agency")

    def _revoke_agency_project(self, call: _Call) -> _Answer:
        return self._project_grant(call, "agency", self.store.detach_policy)

    # -- Huawei's ids to the store's names (within the caller's domain) -------------------------------------

    def _user(self, call: _Call) -> User:
        return self._user_by_id(call, call.params["user_id"])

    def _user_by_id(self, call: _Call, user_id: str) -> User:
        for user in _store(lambda: self.store.list_users(domain=call.domain)):
            if user.id == user_id:
                return user
        raise ResourceNotFound(f"no user {user_id!r} in the caller's domain")

    def _user_id_of(self, call: _Call, name: str) -> str:
        return _store(lambda: self.store.find_user(name, domain=call.domain)).id

    def _groups(self, call: _Call) -> list[GroupDetail]:
        return _store(lambda: self.store.list_groups(domain=call.domain))

    def _group(self, call: _Call) -> GroupDetail:
        group_id = call.params["group_id"]
        for group in self._groups(call):
            if group.id == group_id:
                return group
        raise ResourceNotFound(f"no group {group_id!r} in the caller's domain")

    def _keys(self, call: _Call, user: User) -> list[AccessKeyInfo]:
        return _store(lambda: self.store.list_access_keys(user.name, domain=call.domain))

    def _key(self, call: _Call, access: str) -> AccessKeyInfo:
        return _store(lambda: self.store.show_access_key(access, domain=call.domain))

    def _roles(self, call: _Call) -> list[PolicyDetail]:
        return _store(lambda: self.store.list_policies(domain=call.domain))

    def _role(self, call: _Call) -> PolicyDetail:
        role_id = call.params["role_id"]
        for role in self._roles(call):
            if role.id == role_id:
                return role
        raise ResourceNotFound(f"no policy {role_id!r} in the caller's domain or among the system ones")

    def _role_named(self, call: _Call, name: str) -> PolicyDetail:
        return _store(lambda: self.store.show_policy(name, domain=call.domain))

    def _agencies(self, call: _Call) -> list[Agency]:
        return _store(lambda: self.store.list_agencies(domain=call.domain))

    def _agency(self, call: _Call) -> Agency:
        agency_id = call.params["agency_id"]
        for agency in self._agencies(call):
            if agency.id == agency_id:
                return agency
        raise ResourceNotFound(f"no agency {agency_id!r} in the caller's domain")

    def _trust(self, fields: Mapping[str, Any]) -> str | None:
        """The trusted domain's name (the store's), named by ``trust_domain_name`` or by the id of a known domain."""
        name, trust_id = _optional_text(fields, "trust_domain_name"), _optional_text(fields, "trust_domain_id")
        if name is not None or trust_id is None:
            return name
        for domain in self.store.list_domains():
            if domain.id == trust_id:
                return domain.name
        raise ResourceNotFound(f"no domain {trust_id!r}")

    def _agency_shape(self, agency: Agency) -> dict[str, Any]:
        trusted = next((d.id for d in self.store.list_domains() if d.name == agency.trust_domain), None)
        return {
            "id": agency.id,
            "name": agency.name,
            "domain_id": agency.domain_id,
            "trust_domain_id": trusted,
            "trust_domain_name": agency.trust_domain,
            "duration": "FOREVER",
            "description": "",
        }

    def _domain_param(self, call: _Call) -> None:
        if call.params["domain_id"] != call.principal.domain_id:
            raise ResourceNotFound("the caller administers its own domain only")


# -- parsing ------------------------------------------------------------------------------------------------


def _store(verb: Callable[[], _T]) -> _T:
    """Run a store verb; its refusals become answers (404 for what is not there, 400 for a refused change)."""
    try:
        return verb()
    except NotFound as exc:
        raise ResourceNotFound(str(exc)) from None
    except ChangeRefused as exc:
        raise AdminChangeRefused(str(exc)) from None


def _json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise MalformedBody("the body is not JSON") from None


def _query(scope: Scope) -> dict[str, list[str]]:
    return parse_qs(scope.get("query_string", b"").decode("latin-1"))


def _object(body: Any, key: str) -> dict[str, Any]:
    value = body.get(key) if isinstance(body, dict) else None
    if not isinstance(value, dict):
        raise MalformedBody(f'expected {{"{key}": {{...}}}}')
    return value


def _text(fields: Mapping[str, Any], key: str) -> str:
    value = fields.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedBody(f"{key} must be a non-empty string")
    return value


def _optional_text(fields: Mapping[str, Any], key: str) -> str | None:
    return None if fields.get(key) is None else _text(fields, key)


def _optional_bool(fields: Mapping[str, Any], key: str) -> bool | None:
    value = fields.get(key)
    if value is not None and not isinstance(value, bool):
        raise MalformedBody(f"{key} must be true or false")
    return value


def _policy(fields: Mapping[str, Any]) -> str:
    document = fields.get("policy")
    if not isinstance(document, dict):
        raise MalformedBody("role.policy must be a policy document")
    return json.dumps(document)


def _same_domain(call: _Call, domain_id: object) -> None:
    if domain_id is not None and domain_id != call.principal.domain_id:
        raise ActionDenied("the caller administers its own domain only")


# -- Huawei's shapes ----------------------------------------------------------------------------------------


def _project(project: Project) -> dict[str, Any]:
    return {
        "id": project.id,
        "name": project.name,
        "domain_id": project.domain_id,
        "parent_id": project.domain_id,
        "enabled": True,
        "is_domain": False,
        "description": "",
        "links": {"self": f"/v3/projects/{project.id}"},
    }


def _user(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "domain_id": user.domain_id,
        "enabled": user.enabled,
        "password_expires_at": None,
        "description": "",
        "links": {"self": f"/v3/users/{user.id}"},
    }


def _group(group: GroupDetail) -> dict[str, Any]:
    return {"id": group.id, "name": group.name, "description": "", "links": {"self": f"/v3/groups/{group.id}"}}


def _credential(key: AccessKeyInfo, user_id: str) -> dict[str, Any]:
    created = None if key.created_at is None else iso_time(key.created_at)
    return {"access": key.access, "status": key.status, "user_id": user_id, "create_time": created, "description": ""}


def _role(policy: PolicyDetail, domain_id: str) -> dict[str, Any]:
    custom = policy.domain is not None
    return {
        "id": policy.id,
        "name": policy.id if custom else policy.name,
        "display_name": policy.name,
        "domain_id": domain_id if custom else None,
        "type": "AX" if custom else "AA",
        "catalog": "CUSTOMED" if custom else "BASE",
        "description": "",
        "policy": json.loads(policy.document),
        "links": {"self": f"/v3.0/OS-ROLE/roles/{policy.id}"},
    }


def _error(code: str, message: str, request_id: str) -> dict[str, str]:
    return {"error_code": code, "error_msg": message, "request_id": request_id}


async def _send_json(send: Send, status: int, payload: Any, request_id: str) -> None:
    headers = [(b"x-request-id", request_id.encode()), (b"cache-control", b"no-store")]
    if payload is None:
        await send_response(send, status, b"", headers)
    else:
        body = json.dumps(payload).encode()
        await send_response(send, status, body, [*headers, (b"content-type", b"application/json")])
