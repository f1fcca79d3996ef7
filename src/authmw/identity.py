"""Who is asking and where: principals, workspaces and IP whitelists as the core sees them (no I/O).

A store (``authmw.store``) builds these values; the pipeline only reads them. Who may enter a workspace is
:mod:`authmw.workspaces`' rule (the domain's administrators are the members of its ``admin`` group, as in IAM);
access to a workspace is needed *in addition* to the IAM action.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from authmw.models import AccessKey
from authmw.policy import PolicySet

__all__ = [
    "ADMIN_GROUP",
    "AuthType",
    "IdentitySource",
    "IpWhitelist",
    "Principal",
    "Project",
    "WhitelistScope",
    "Workspace",
    "policy_facts",
    "unmapped",
]

ADMIN_GROUP = "admin"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


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


@dataclass(frozen=True, slots=True)
class IpWhitelist:
    """Addresses and CIDR blocks (IPv4 and IPv6); an empty whitelist allows every address."""

    networks: tuple[IpNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> IpWhitelist:
        """Parse entries such as ``192.0.2.7`` or ``2001:db8::/32``; raises ValueError naming a bad entry.

        IPv4-mapped IPv6 entries (``::ffff:10.0.0.0/104``) become their IPv4 form, as client addresses do;
        zone ids (``fe80::1%eth0``) are refused; an entry given twice counts once.
        """
        networks: dict[IpNetwork, None] = {}
        for entry in entries:
            text = entry.strip() if isinstance(entry, str) else ""
            try:
                if not text or "%" in text:
                    raise ValueError
                network = ipaddress.ip_network(text, strict=True)
            except ValueError:
                raise ValueError(
                    f"not an IP address or CIDR block (host bits must be zero, no zone id): {entry!r}"
                ) from None
            networks[_unmapped(network)] = None
        return cls(tuple(networks))

    @property
    def entries(self) -> tuple[str, ...]:
        """Canonical text of each entry (a single address without its prefix length)."""
        return tuple(
            str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net) for net in self.networks
        )

    def allows(self, address: str | None) -> bool:
        """True when the whitelist is empty or ``address`` falls in one entry (unparsable addresses never do)."""
        if not self.networks:
            return True
        if address is None:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return self.contains(unmapped(ip))

    def contains(self, ip: IpAddress) -> bool:
        """Whether ``ip`` (already :func:`unmapped`) falls in one entry."""
        return any(ip in net for net in self.networks if net.version == ip.version)


def unmapped(ip: IpAddress) -> IpAddress:
    """An IPv4-mapped IPv6 address as the IPv4 address it carries (how a dual-stack socket reports IPv4)."""
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip if mapped is None else mapped


def _unmapped(network: IpNetwork) -> IpNetwork:
    mapped = network.network_address.ipv4_mapped if isinstance(network, ipaddress.IPv6Network) else None
    if mapped is None or network.prefixlen < 96:
        return network
    return ipaddress.IPv4Network((mapped, network.prefixlen - 96))


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
