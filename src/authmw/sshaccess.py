"""SSH remote access to a notebook: which ``authorized_keys`` line, if any, answers one login attempt (pure).

OpenSSH's ``AuthorizedKeysCommand`` asks, for each key a client offers, which keys may log into the account.
authmw answers for one notebook instance: the key pair chosen for it, if the login account is the notebook's,
its owner is enabled and may enter the notebook's workspace, the key has not expired, and the notebook's,
the owner's and the workspace's IP whitelists leave some address to come from. The line it prints starts
with ``restrict`` (no forwarding, no pty, no ``~/.ssh/rc``) plus what the operator re-enables, ``from=`` the
addresses all the whitelists allow, and ``expiry-time=`` when the key expires, so sshd enforces them too.
Every attempt gets a :class:`Verdict` naming why, for the audit record.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import re
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass

from authmw.clientaddr import IpNetwork, IpWhitelist, parse_address
from authmw.models import Workspace
from authmw.workspaces import can_access_workspace

__all__ = [
    "DEFAULT_LOGIN_USER",
    "KEY_OPTIONS",
    "KEY_TYPES",
    "LOGIN_USER",
    "NotebookAccess",
    "Owner",
    "Reason",
    "Verdict",
    "blob_fingerprint",
    "check_key_options",
    "decide",
    "expiry_time",
    "from_patterns",
    "narrow",
    "offered_key",
]

#: The account a notebook's SSH logins land in unless said otherwise (ModelArts notebooks use ``ma-user``).
DEFAULT_LOGIN_USER = "ma-user"
#: A login account name as sshd passes it (``%u``): a portable POSIX user name.
LOGIN_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
#: The OpenSSH key types a key pair may have (what ``%t`` names).
KEY_TYPES = frozenset({"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"})
#: What an operator may give back after ``restrict`` (an IDE's remote mode needs ``pty`` and ``port-forwarding``).
KEY_OPTIONS = frozenset({"agent-forwarding", "port-forwarding", "pty", "user-rc", "X11-forwarding"})
_MAX_KEY_TEXT = 16384  # base64 of a 16384-bit RSA key is under 3 KB; anything far longer is not a key


class Reason(enum.Enum):
    """Why a login attempt got a key line (``allowed``) or none: the audit record's ``reason``."""

    ALLOWED = "allowed"
    NO_NOTEBOOK = "no_notebook"
    WRONG_LOGIN = "wrong_login_account"
    NO_OWNER = "no_owner"
    USER_DISABLED = "user_disabled"
    NO_KEYPAIR = "no_keypair"
    OTHER_KEY = "key_not_of_notebook"
    KEY_EXPIRED = "key_expired"
    NO_WORKSPACE = "no_workspace"
    WORKSPACE_DENIED = "workspace_denied"
    WHITELISTS_DISJOINT = "whitelists_disjoint"
    SOURCE_NOT_WHITELISTED = "source_not_whitelisted"


@dataclass(frozen=True, slots=True)
class Owner:
    """A notebook's owner as the workspace rule reads it (a :class:`~authmw.workspaces.Member`)."""

    user_id: str
    user_name: str
    domain_id: str
    enabled: bool
    groups: frozenset[str] = frozenset()
    is_admin: bool = False


@dataclass(frozen=True, slots=True)
class NotebookAccess:
    """What the store holds about one notebook, read in one snapshot.

    ``public_key`` is the key pair's ``type base64`` line (None when the key pair was deleted); ``whitelists``
    are the notebook's, the owner's and the workspace's (an empty one allows every address).
    """

    notebook: str
    login_user: str
    owner: Owner | None
    keypair: str | None
    public_key: str | None
    key_expires_at: int | None
    workspace: Workspace | None
    whitelists: tuple[IpWhitelist, ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to one attempt: the ``authorized_keys`` line to print (None: print nothing) and why."""

    reason: Reason
    line: str | None = None

    @property
    def allowed(self) -> bool:
        return self.line is not None


def offered_key(key_type: str, key_text: str) -> bytes:
    """The key blob sshd passes as ``%t %k``; ValueError unless it is a well-formed key of that known type."""
    if key_type not in KEY_TYPES:
        raise ValueError("unknown key type (%t)")
    if not 0 < len(key_text) <= _MAX_KEY_TEXT or not key_text.isascii():
        raise ValueError("malformed key (%k)")
    try:
        blob = base64.b64decode(key_text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("malformed key (%k): not base64") from None
    # The blob starts with its own type as an SSH string: a key of another type is malformed, not merely wrong.
    name = key_type.encode()
    if blob[:4] != struct.pack(">I", len(name)) or blob[4 : 4 + len(name)] != name or len(blob) <= 4 + len(name):
        raise ValueError("malformed key (%k): not a key of type %t")
    return blob


def blob_fingerprint(blob: bytes) -> str:
    """OpenSSH's ``SHA256:<base64 without padding>`` fingerprint of a key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def check_key_options(options: Iterable[str]) -> tuple[str, ...]:
    """The options re-enabled after ``restrict``, each once; ValueError naming one that is not in KEY_OPTIONS."""
    chosen = tuple(dict.fromkeys(options))
    unknown = [option for option in chosen if option not in KEY_OPTIONS]
    if unknown:
        raise ValueError(f"unknown key option {unknown[0]!r}: choose from {', '.join(sorted(KEY_OPTIONS))}")
    return chosen


def narrow(whitelists: Iterable[IpWhitelist]) -> IpWhitelist | None:
    """The addresses every whitelist allows, as a whitelist (empty: any address); None when none is left."""
    result: tuple[IpNetwork, ...] | None = None  # None: no restriction so far
    for whitelist in whitelists:
        if not whitelist.networks:
            continue
        if result is None:
            result = whitelist.networks
            continue
        # Two CIDR blocks overlap only when one holds the other; the overlap is then the smaller one.
        overlap: dict[IpNetwork, None] = {}
        for a in result:
            for b in whitelist.networks:
                if a.version == b.version and (a.subnet_of(b) or b.subnet_of(a)):  # type: ignore[arg-type]
                    overlap[a if a.prefixlen >= b.prefixlen else b] = None
        if not overlap:
            return None
        result = tuple(overlap)
    return IpWhitelist(result or ())


def from_patterns(whitelist: IpWhitelist) -> str:
    """The ``from=`` pattern list: every entry in CIDR form (a host name can never match ``a.b.c.d/32``)."""
    return ",".join(str(network) for network in whitelist.networks)


def expiry_time(timestamp: int) -> str:
    """An ``expiry-time=`` timespec in UTC (``YYYYMMDDHHMMSSZ``)."""
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(timestamp))


def decide(
    access: NotebookAccess | None,
    *,
    login: str,
    blob: bytes,
    source: str | None,
    now: int,
    options: tuple[str, ...] = (),
) -> Verdict:
    """The line for the key ``blob`` offered to log into ``login`` from ``source`` (None: unknown) at ``now``."""
    if access is None:
        return Verdict(Reason.NO_NOTEBOOK)
    if login != access.login_user:
        return Verdict(Reason.WRONG_LOGIN)
    owner = access.owner
    if owner is None:
        return Verdict(Reason.NO_OWNER)
    if not owner.enabled:
        return Verdict(Reason.USER_DISABLED)
    if access.public_key is None:
        return Verdict(Reason.NO_KEYPAIR)
    key_type, _, key_text = access.public_key.partition(" ")
    if base64.b64decode(key_text.split(" ")[0]) != blob:
        return Verdict(Reason.OTHER_KEY)
    if access.key_expires_at is not None and access.key_expires_at <= now:
        return Verdict(Reason.KEY_EXPIRED)
    if access.workspace is None:
        return Verdict(Reason.NO_WORKSPACE)
    if not can_access_workspace(owner, access.workspace):
        return Verdict(Reason.WORKSPACE_DENIED)
    allowed = narrow(access.whitelists)
    if allowed is None:
        return Verdict(Reason.WHITELISTS_DISJOINT)
    if source is not None and not allowed.allows(_address(source)):
        return Verdict(Reason.SOURCE_NOT_WHITELISTED)
    parts = ["restrict", *options]
    if allowed.networks:
        parts.append(f'from="{from_patterns(allowed)}"')
    if access.key_expires_at is not None:
        parts.append(f'expiry-time="{expiry_time(access.key_expires_at)}"')
    comment = f"authmw:{owner.user_name}/{access.keypair}@{access.notebook}"
    return Verdict(Reason.ALLOWED, f"{','.join(parts)} {key_type} {base64.b64encode(blob).decode()} {comment}")


def _address(source: str) -> str | None:
    ip = parse_address(source)
    return None if ip is None else str(ip)
