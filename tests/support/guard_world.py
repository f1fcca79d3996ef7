"""The guard over an in-memory identity source with an injected clock (tests/core/test_guard.py and the core
tests built on it): the world of principals, projects and workspaces, and the helpers that call the guard."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import pytest

from authmw.clientaddr import IpWhitelist
from authmw.errors import AuthmwError
from authmw.guard import Guard
from authmw.models import AccessKey, AuthContext, AuthType, Principal, Project, Request, WhitelistScope, Workspace
from authmw.policy import PolicySet, parse_policy
from authmw.routes import RouteCatalog
from authmw.signing import sign_request

T0 = 1_714_566_896  # 2024-05-01T12:34:56Z
T0_TEXT = "2024-05-01T12:34:56Z"
HOST = "https://modelarts.cn-north-4.example.com"
MAIN, OTHER = "d-main", "d-other"
P1 = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"  # a project of MAIN
P2 = "f9e8d7c6b5a4938271605f4e3d2c1b0a"  # a project of OTHER
WS_PUBLIC = "1" * 32
WS_PRIVATE = "2" * 32  # owned by alice
WS_INTERNAL = "3" * 32  # owned by alice; grants erin, and the group ml
WS_FOREIGN = "4" * 32  # a PUBLIC workspace of OTHER
WS_UNKNOWN = "5" * 32
CLIENT = "203.0.113.9"
NOTEBOOKS = f"/v1/{P1}/notebooks"
SERVICE = f"/v1/{P1}/services/s1"

STATUS = {
    "route_not_allowed": 403,
    "missing_credentials": 401,
    "scheme_disabled": 401,
    "multiple_credentials": 400,
    "signature_mismatch": 401,
    "authentication_failed": 401,
    "date_out_of_window": 401,
    "invalid_workspace_id": 400,
    "conflicting_workspace": 400,
    "malformed_body": 400,
    "workspace_not_found": 403,
    "workspace_denied": 403,
    "conflicting_project": 400,
    "project_not_found": 403,
    "address_not_allowed": 403,
    "action_denied": 403,
    "ambiguous_path": 400,
    "invalid_encoding": 400,
    "header_not_signed": 401,
    "unsigned_payload_refused": 401,
}


def policies(*statements: dict[str, Any]) -> PolicySet:
    return PolicySet([parse_policy({"Version": "1.1", "Statement": list(statements)}, name="p")])


def allow(*actions: str, **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": list(actions), **extra}


def deny(*actions: str, **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": list(actions), **extra}


FULL = policies(allow("modelarts:*:*"))


class Clock:
    def __init__(self) -> None:
        self.now: float = T0

    def __call__(self) -> float:
        return self.now


def _principal(name: str, domain: str, *groups: str, rules: PolicySet = FULL) -> Principal:
    domain_name = {MAIN: "main", OTHER: "other"}[domain]
    return Principal(f"u-{name}", name, domain, domain_name, frozenset(groups), rules, is_admin="admin" in groups)


@dataclass
class World:
    """An in-memory IdentitySource: a domain MAIN with users, projects and workspaces, and a domain OTHER."""

    clock: Clock = field(default_factory=Clock)
    principals: dict[str, Principal] = field(default_factory=dict)
    keys: dict[str, AccessKey] = field(default_factory=dict)
    projects: dict[str, Project] = field(default_factory=dict)
    workspaces: dict[str, Workspace] = field(default_factory=dict)
    whitelists: dict[tuple[WhitelistScope, str], IpWhitelist] = field(default_factory=dict)
    lookups: list[tuple[str, str]] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for principal in (
            _principal("alice", MAIN, "developers"),
            _principal("bob", MAIN, "ml"),
            _principal("erin", MAIN),
            _principal("frank", MAIN, "developers"),
            _principal("root", MAIN, "admin"),
            _principal("dave", MAIN, rules=PolicySet()),
            _principal("carol", OTHER),
        ):
            self.principals[principal.user_id] = principal
            key = AccessKey(f"AK-{principal.user_name}", f"SK-{principal.user_name}-secret", principal.user_id)
            self.keys[key.access_key] = key
        self.keys["AK-ghost"] = AccessKey("AK-ghost", "SK-ghost-secret", "u-ghost")  # a user since removed
        self.projects[P1] = Project(P1, "cn-north-4", MAIN, "cn-north-4")
        self.projects[P2] = Project(P2, "cn-north-4", OTHER, "cn-north-4")
        for workspace in (
            Workspace("0", "default", None, AuthType.PUBLIC),
            Workspace(WS_PUBLIC, "shared", MAIN, AuthType.PUBLIC, "u-bob"),
            Workspace(WS_PRIVATE, "private", MAIN, AuthType.PRIVATE, "u-alice"),
            Workspace(
                WS_INTERNAL, "team", MAIN, AuthType.INTERNAL, "u-alice", frozenset({"u-erin"}), frozenset({"ml"})
            ),
            Workspace(WS_FOREIGN, "elsewhere", OTHER, AuthType.PUBLIC, "u-carol"),
        ):
            self.workspaces[workspace.id] = workspace

    def rules(self, user: str, *statements: dict[str, Any]) -> None:
        """Replace the policies of ``user``."""
        principal = self.principals[f"u-{user}"]
        self.principals[principal.user_id] = replace(principal, policies=policies(*statements))

    def whitelist(self, scope: WhitelistScope, name: str) -> IpWhitelist:
        return self.whitelists.get((scope, name), IpWhitelist())

    def allow_only(self, scope: WhitelistScope, name: str, *entries: str) -> None:
        self.whitelists[(scope, name)] = IpWhitelist.parse(entries)

    def get_access_key(self, access_key: str) -> AccessKey | None:
        return self.keys.get(access_key)

    def principal(self, user_id: str) -> Principal | None:
        return self.principals.get(user_id)

    def token_revoked(self, token_id: str) -> bool:
        return token_id in self.revoked

    def project(self, project_id: str) -> Project | None:
        self.lookups.append(("project", project_id))
        return self.projects.get(project_id)

    def workspace(self, workspace_id: str) -> Workspace | None:
        self.lookups.append(("workspace", workspace_id))
        return self.workspaces.get(workspace_id)


def guard(world: World, **options: Any) -> Guard:
    options.setdefault("clock", world.clock)
    options.setdefault("request_id", lambda: "req-1")
    return Guard(identity=world, **options)


def call(
    method: str = "GET",
    path: str = NOTEBOOKS,
    *,
    query: str = "",
    body: bytes | str = b"",
    headers: Mapping[str, str] | None = None,
    user: str | None = "alice",
    secret: str | None = None,
    client: str | None = CLIENT,
    at: float = T0,
    unsigned: Mapping[str, str] | None = None,
    sent_query: str | None = None,
) -> Request:
    """A request signed (SDK-HMAC-SHA256) by ``user`` (None: not signed); ``unsigned`` headers are added after
    signing; ``sent_query`` replaces the query on the wire by a spelling with the same canonical form."""
    payload = body.encode() if isinstance(body, str) else body
    if user is None:
        out_headers = dict(headers or {})
        target = path + (f"?{query}" if query else "")
    else:
        signed = sign_request(
            method,
            HOST + path + (f"?{query}" if query else ""),
            headers,
            payload,
            access_key=f"AK-{user}",
            secret_key=secret or f"SK-{user}-secret",
            at=at,
        )
        split = urlsplit(signed.url)
        out_headers = signed.headers
        target = split.path + (f"?{split.query}" if split.query else "")
    if sent_query is not None:
        target = target.partition("?")[0] + f"?{sent_query}"
    pairs = [*out_headers.items(), *(unsigned or {}).items()]
    return Request.build(method, target, pairs, payload, client)


def refused(guard: Guard, request: Request) -> AuthmwError:
    with pytest.raises(AuthmwError) as raised:
        guard.check(request)
    error = raised.value
    assert error.status == STATUS.get(error.code, error.status)
    return error


def code_of(guard: Guard, request: Request) -> str:
    return refused(guard, request).code


def authorize_error(guard: Guard, context: AuthContext, action: str) -> AuthmwError:
    with pytest.raises(AuthmwError) as raised:
        guard.authorize(context, action)
    return raised.value


def actions_of(catalog: RouteCatalog, prefix: str) -> tuple[str, ...]:
    return tuple(a for a in catalog.actions if a.startswith(prefix))


# -- the happy path ------------------------------------------------------------------------------------------
