"""What the pipeline reads about who is asking (no I/O): the :class:`IdentitySource` a store implements, and the
policy facts of a principal.

A store (``authmw.store``) builds the values (:class:`~authmw.models.Principal`, ``Workspace``, ...); the pipeline
only reads them. A domain's administrators are the members of its ``admin`` group (:data:`ADMIN_GROUP`), as in
IAM.
"""

from __future__ import annotations

from typing import Protocol

from authmw.clientaddr import IpWhitelist
from authmw.models import AccessKey, Principal, Project, WhitelistScope, Workspace

__all__ = [
    "ADMIN_GROUP",
    "IdentitySource",
    "policy_facts",
]

ADMIN_GROUP = "admin"


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
