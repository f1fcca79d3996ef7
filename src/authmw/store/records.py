"""What the store's administration verbs return: frozen values, secrets kept out of ``repr``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from authmw import models

__all__ = [
    "AccessKeyInfo",
    "Agency",
    "Domain",
    "DomainSummary",
    "Group",
    "GroupDetail",
    "KeyPair",
    "NewAccessKey",
    "NewKeyPair",
    "Notebook",
    "PolicyDetail",
    "PolicyInfo",
    "Project",
    "User",
    "UserDetail",
    "WorkspaceInfo",
]


class _Record:
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (what ``--format json`` prints)."""
        return asdict(self)  # type: ignore[call-overload, no-any-return]


@dataclass(frozen=True, slots=True)
class Domain(_Record):
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class DomainSummary(_Record):
    """A domain and how much it holds (a domain is deleted only once it holds nothing)."""

    id: str
    name: str
    projects: int
    users: int
    groups: int
    policies: int
    agencies: int
    workspaces: int
    notebooks: int


@dataclass(frozen=True, slots=True)
class Project(models.Project, _Record):
    """A project as the administration verbs report it."""


@dataclass(frozen=True, slots=True)
class User(_Record):
    id: str
    name: str
    domain_id: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class UserDetail(_Record):
    """A user with what hangs on it, by name (``*_at``: epoch seconds)."""

    id: str
    name: str
    domain: str
    enabled: bool
    password_set: bool
    password_changed_at: int | None
    created_at: int
    groups: tuple[str, ...]
    policies: tuple[str, ...]
    access_keys: tuple[str, ...]
    keypairs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Group(_Record):
    id: str
    name: str
    domain_id: str


@dataclass(frozen=True, slots=True)
class GroupDetail(_Record):
    id: str
    name: str
    domain: str
    users: tuple[str, ...]
    policies: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AccessKeyInfo(_Record):
    """A key without its secret; ``last_used_at`` (epoch seconds) is recorded coarsely, at most once a minute."""

    access: str
    user: str
    status: str
    created_at: int | None = None
    last_used_at: int | None = None


@dataclass(frozen=True, slots=True)
class NewAccessKey(_Record):
    """A key just created: the only value that ever carries the secret in clear."""

    access: str
    secret: str = field(repr=False)
    user: str
    status: str


@dataclass(frozen=True, slots=True)
class PolicyInfo(_Record):
    id: str
    name: str
    domain_id: str | None


@dataclass(frozen=True, slots=True)
class PolicyDetail(_Record):
    """A policy, its document and whom it is attached to (``user:NAME``, ``group:NAME``, ``agency:NAME``);
    ``domain`` is None for a system policy."""

    id: str
    name: str
    domain: str | None
    attached_to: tuple[str, ...]
    document: str = ""  # the JSON text, as stored


@dataclass(frozen=True, slots=True)
class Agency(_Record):
    id: str
    name: str
    domain_id: str
    trust_domain: str
    max_duration: int
    policies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WorkspaceInfo(_Record):
    id: str
    name: str
    auth_type: str
    domain_id: str | None
    owner: str | None = None
    grants: tuple[str, ...] = ()
    created_at: int | None = None


@dataclass(frozen=True, slots=True)
class KeyPair(_Record):
    name: str
    user: str
    type: str
    fingerprint: str
    public_key: str
    expires_at: int | None = None  # seconds since 1970; None: never


@dataclass(frozen=True, slots=True)
class NewKeyPair(KeyPair):
    """A generated key pair: the private key (OpenSSH PEM) is returned once and never stored."""

    private_key: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class Notebook(_Record):
    """A notebook instance: who owns it, which key pair opens it over SSH, into which account, from where.

    ``owner``, ``keypair`` and ``workspace`` are None once what they named was deleted (no key opens it then).
    """

    name: str
    domain_id: str
    owner: str | None
    keypair: str | None
    workspace: str | None
    login_user: str
    whitelist: tuple[str, ...] = ()
