"""Who is asking and where: principals, workspaces and IP whitelists as the core sees them (no I/O).

A store (``authmw.store``) builds these values; the pipeline only reads them. Who may enter a workspace is
:mod:`authmw.workspaces`' rule (the domain's administrators are the members of its ``admin`` group, as in IAM);
access to a workspace is needed *in addition* to the IAM action.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from authmw.clientaddr import IpWhitelist
from authmw.models import AccessKey
from authmw.policy import PolicySet

__all__ = [
    "ADMIN_GROUP",
    "AuthType",
    "IdentitySource",
    "Principal",
    "Project",
    "WhitelistScope",
    "Workspace",
    "policy_facts",
]

ADMIN_GROUP = "admin"


class AuthType(enum.Enum):
    """Who may enter a workspace (ModelArts ``auth_type``)."""

    PUBLIC = "PUBLIC"
    PRIVATE = "PRIVATE"
    INTERNAL = "INTERNAL"


class WhitelistScope(enum.Enum):
    """What an IP whitelist is attached to."""

    USER = "user"
    WORKSPACE = "workspace"
    ROUTE = "route"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated IAM user with the policies in effect for it (its own and its groups')."""

    user_id: str
    user_name: str
    domain_id: str
    domain_name: str
    groups: frozenset[str]
    policies: PolicySet = field(repr=False, compare=False)
    is_admin: bool = False
    password_changed_at: int | None = None  # tokens issued before it are no longer valid


@dataclass(frozen=True, slots=True)
class Project:
    """A region-scoped project of a domain (the ``{project_id}`` of ModelArts URLs)."""

    id: str
    name: str
    domain_id: str
    region: str


@dataclass(frozen=True, slots=True)
class Workspace:
    """A logically isolated space; ``domain_id`` is None for the default workspace shared by every domain."""

    id: str
    name: str
    domain_id: str | None
    auth_type: AuthType
    owner_id: str | None = None
    granted_users: frozenset[str] = frozenset()
    granted_groups: frozenset[str] = frozenset()


def policy_facts(
    principal: Principal,
    *,
    current_time: str,
    mfa: bool,
    source_ip: str | None,
    workspace: Workspace | None = None,
    project: Project | None = None,
) -> dict[str, object]:
    """The global condition keys (lower-case) a policy decision about ``principal`` reads: ``g:CurrentTime``
    (ISO 8601, see :func:`authmw.tokens.iso_time`), who is asking, MFA, the client address, and where (the
    workspace and project, when the request has them). One builder for every decision, so none misses a key."""
    facts: dict[str, object] = {
        "g:currenttime": current_time,
        "g:userid": principal.user_id,
        "g:username": principal.user_name,
        "g:domainid": principal.domain_id,
        "g:domainname": principal.domain_name,
        "g:mfapresent": mfa,
    }
    if workspace is not None:
        facts["modelarts:workspaceid"] = workspace.id
    if source_ip is not None:
        facts["g:sourceip"] = source_ip
    if project is not None:
        facts["g:projectid"] = project.id
        facts["g:projectname"] = project.name
    return facts


class IdentitySource(Protocol):
    """What the pipeline reads from a store; every method may raise ``StoreUnavailable``."""

    def get_access_key(self, access_key: str) -> AccessKey | None: ...

    def principal(self, user_id: str) -> Principal | None: ...

    def agency(self, agency_id: str) -> Principal | None: ...

    def user_id(self, domain: str, name: str) -> str | None: ...

    def project(self, project_id: str) -> Project | None: ...

    def token_revoked(self, token_id: str) -> bool: ...

    def workspace(self, workspace_id: str) -> Workspace | None: ...

    def whitelist(self, scope: WhitelistScope, name: str) -> IpWhitelist: ...
