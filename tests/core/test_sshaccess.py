"""The SSH access decision (authmw.sshaccess): every reason, the line's options, whitelist intersection, %t/%k."""

from __future__ import annotations

import base64
import struct
from dataclasses import replace

import pytest

from authmw.clientaddr import IpWhitelist
from authmw.models import AuthType, Workspace
from authmw.sshaccess import (
    NotebookAccess,
    Owner,
    Reason,
    blob_fingerprint,
    check_key_options,
    decide,
    expiry_time,
    narrow,
    offered_key,
)

# A real ed25519 public key (ssh-keygen) and its OpenSSH fingerprint.
KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIO2b4zOsZaE3ZFcD0vsXqwBoK/GmdfzYS5AkY9Nn/BnO"
FINGERPRINT = "SHA256:GmFuuJwWUtwX/uae+BRusT1XSU75xbvXxckYBqEQdnk"
OTHER = base64.b64encode(struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + b"\x01" * 32).decode()
DOMAIN = "d" * 32
ALICE = Owner(user_id="u-alice", user_name="alice", domain_id=DOMAIN, enabled=True, groups=frozenset({"g-team"}))
PUBLIC = Workspace(id="0", name="default", domain_id=None, auth_type=AuthType.PUBLIC)
ACCESS = NotebookAccess(
    notebook="nb1",
    login_user="ma-user",
    owner=ALICE,
    keypair="laptop",
    public_key=f"ssh-ed25519 {KEY}",
    key_expires_at=None,
    workspace=PUBLIC,
)
NOW = 1_800_000_000


def _decide(access: NotebookAccess | None, *, login: str = "ma-user", key: str = KEY, source: str | None = None):  # type: ignore[no-untyped-def]
    return decide(access, login=login, blob=offered_key("ssh-ed25519", key), source=source, now=NOW)


def test_the_owner_key_gets_a_restricted_line() -> None:
    verdict = _decide(ACCESS)
    assert verdict.reason is Reason.ALLOWED and verdict.allowed
    assert verdict.line == f"restrict ssh-ed25519 {KEY} authmw:alice/laptop@nb1"


def test_the_line_carries_from_expiry_and_the_operator_options() -> None:
    access = replace(
        ACCESS,
        key_expires_at=NOW + 3600,
        whitelists=(IpWhitelist.parse(["10.0.0.0/8", "192.0.2.7"]), IpWhitelist.parse(["10.1.0.0/16"])),
    )
    verdict = decide(
        access, login="ma-user", blob=offered_key("ssh-ed25519", KEY), source=None, now=NOW, options=("pty",)
    )
    assert verdict.line is not None
    options, key_type, key, comment = verdict.line.split(" ")
    assert options == f'restrict,pty,from="10.1.0.0/16",expiry-time="{expiry_time(NOW + 3600)}"'
    assert (key_type, key, comment) == ("ssh-ed25519", KEY, "authmw:alice/laptop@nb1")
    assert expiry_time(NOW + 3600) == "20270115090000Z"


WORKSPACE = Workspace(id="w" * 32, name="team", domain_id=DOMAIN, auth_type=AuthType.INTERNAL)


@pytest.mark.parametrize(
    ("access", "login", "key", "source", "reason"),
    [
        (None, "ma-user", KEY, None, Reason.NO_NOTEBOOK),
        (ACCESS, "root", KEY, None, Reason.WRONG_LOGIN),
        (replace(ACCESS, owner=None), "ma-user", KEY, None, Reason.NO_OWNER),
        (replace(ACCESS, owner=replace(ALICE, enabled=False)), "ma-user", KEY, None, Reason.USER_DISABLED),
        (replace(ACCESS, public_key=None, keypair=None), "ma-user", KEY, None, Reason.NO_KEYPAIR),
        (ACCESS, "ma-user", OTHER, None, Reason.OTHER_KEY),
        (replace(ACCESS, key_expires_at=NOW), "ma-user", KEY, None, Reason.KEY_EXPIRED),
        (replace(ACCESS, workspace=None), "ma-user", KEY, None, Reason.NO_WORKSPACE),
        (replace(ACCESS, workspace=WORKSPACE), "ma-user", KEY, None, Reason.WORKSPACE_DENIED),
        (
            replace(ACCESS, whitelists=(IpWhitelist.parse(["10.0.0.0/8"]), IpWhitelist.parse(["192.0.2.0/24"]))),
            "ma-user",
            KEY,
            None,
            Reason.WHITELISTS_DISJOINT,
        ),
        (
            replace(ACCESS, whitelists=(IpWhitelist.parse(["127.0.0.1"]),)),
            "ma-user",
            KEY,
            "127.0.0.2",
            Reason.SOURCE_NOT_WHITELISTED,
        ),
    ],
    ids=lambda v: v.value if isinstance(v, Reason) else None,
)
def test_every_refusal_prints_nothing(
    access: NotebookAccess | None, login: str, key: str, source: str | None, reason: Reason
) -> None:
    verdict = _decide(access, login=login, key=key, source=source)
    assert (verdict.reason, verdict.line, verdict.allowed) == (reason, None, False)


def test_workspace_grants_admit_through_the_core_rule() -> None:
    granted = replace(WORKSPACE, granted_groups=frozenset({"g-team"}))
    assert _decide(replace(ACCESS, workspace=granted)).allowed
    assert _decide(replace(ACCESS, workspace=replace(WORKSPACE, owner_id="u-alice"))).allowed
    assert _decide(replace(ACCESS, workspace=WORKSPACE, owner=replace(ALICE, is_admin=True))).allowed
    other_domain = replace(granted, domain_id="e" * 32)
    assert _decide(replace(ACCESS, workspace=other_domain)).reason is Reason.WORKSPACE_DENIED


def test_a_whitelisted_source_passes_and_is_also_enforced_by_from() -> None:
    access = replace(ACCESS, whitelists=(IpWhitelist.parse(["127.0.0.1"]),))
    verdict = _decide(access, source="127.0.0.1")
    assert verdict.line is not None and 'from="127.0.0.1/32"' in verdict.line
    assert _decide(access, source="::ffff:127.0.0.1").allowed  # how a dual-stack socket reports IPv4


@pytest.mark.parametrize(
    ("lists", "expected"),
    [
        ([], ()),
        ([[], []], ()),
        ([["10.0.0.0/8"], []], ("10.0.0.0/8",)),
        ([["10.0.0.0/8"], ["10.1.0.0/16", "192.0.2.0/24"]], ("10.1.0.0/16",)),
        ([["10.1.0.0/16", "10.2.0.0/16"], ["10.0.0.0/8"]], ("10.1.0.0/16", "10.2.0.0/16")),
        ([["192.0.2.7"], ["192.0.2.0/24"], ["192.0.0.0/16"]], ("192.0.2.7",)),
        ([["2001:db8::/32"], ["2001:db8:1::/48", "10.0.0.0/8"]], ("2001:db8:1::/48",)),
        ([["10.0.0.0/8"], ["2001:db8::/32"]], None),
        ([["10.0.0.1"], ["10.0.0.2"]], None),
    ],
)
def test_narrow_is_the_intersection(lists: list[list[str]], expected: tuple[str, ...] | None) -> None:
    result = narrow(IpWhitelist.parse(entries) for entries in lists)
    assert (None if result is None else result.entries) == expected


@pytest.mark.parametrize(
    ("key_type", "key"),
    [
        ("ssh-dss", KEY),  # not a type a key pair may have
        ("", KEY),
        ("ssh-ed25519", ""),
        ("ssh-ed25519", "not base64!"),
        ("ssh-ed25519", KEY[:-1]),  # bad padding
        ("ssh-rsa", KEY),  # the blob names another type
        ("ssh-ed25519", base64.b64encode(struct.pack(">I", 11) + b"ssh-ed25519").decode()),  # a type, no key
        ("ssh-ed25519", "A" * 20000),
        ("ssh-ed25519", KEY + "é"),
    ],
)
def test_malformed_offered_keys_are_refused(key_type: str, key: str) -> None:
    with pytest.raises(ValueError, match="%"):
        offered_key(key_type, key)


def test_fingerprint_is_openssh_s() -> None:
    assert blob_fingerprint(offered_key("ssh-ed25519", KEY)) == FINGERPRINT


def test_key_options_are_an_allow_list() -> None:
    assert check_key_options(["pty", "port-forwarding", "pty"]) == ("pty", "port-forwarding")
    for bad in ('command="/bin/sh"', "permitopen=*:*", "pty,command=x", "no-restrict"):
        with pytest.raises(ValueError, match="unknown key option"):
            check_key_options([bad])
