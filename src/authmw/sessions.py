"""Temporary credentials: sessions sealed into self-contained security tokens (no I/O, no per-session state).

A security token is ``v1.<kid>.<base64url(nonce ‖ AES-256-GCM ciphertext)>``: the sealing key ``kid`` encrypts
and authenticates the session (temporary secret, caller, agency, expiry, session policy), with the version and
``kid`` as associated data. Whoever holds the sealing keys can open it; nobody else can read or alter it. A
request signed with the temporary key carries the token in a signed ``X-Security-Token``; the verifier asks
:meth:`SessionSealer.resolve` for the key, and the pipeline acts as the session's principal (the agency, or the
caller for the ``token`` method) with the session policy intersected.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authmw.cache import BoundedCache
from authmw.errors import ConfigurationError, ExpiredSecurityToken, InvalidSecurityToken, SecurityTokenMismatch
from authmw.models import AccessKey, Session
from authmw.policy import PolicySet, parse_policy
from authmw.tokens import KeyReloads

__all__ = ["DEFAULT_DURATION", "MAX_DURATION", "MIN_DURATION", "SessionSealer", "new_temporary_key"]

#: How long temporary credentials (and an agency's maximum session) may last, in seconds; IAM's default is the
#: shortest.
MIN_DURATION, MAX_DURATION = 900, 86400
DEFAULT_DURATION = MIN_DURATION
_VERSION = "v1"
_MAX_TOKEN = 8192
_AK_ALPHABET = string.ascii_uppercase + string.digits
_SK_ALPHABET = string.ascii_letters + string.digits


def new_temporary_key() -> tuple[str, str]:
    """A fresh temporary access key (20 upper-case letters and digits, as IAM's, starting with
    ``AccessKey.TEMPORARY_PREFIX``) and its 40-character secret."""
    prefix = AccessKey.TEMPORARY_PREFIX
    access = prefix + "".join(secrets.choice(_AK_ALPHABET) for _ in range(AccessKey.TEMPORARY_LENGTH - len(prefix)))
    return access, "".join(secrets.choice(_SK_ALPHABET) for _ in range(40))


class SessionSealer:
    """Seals sessions into security tokens and opens them again (the verifier's security-token resolver).

    ``keys`` maps ``kid`` → 32-byte AES key; ``active`` seals (None: this sealer only opens). Opened tokens are
    remembered (``cache_size``, oldest out) until they expire, so a repeated token costs a dict lookup; sessions
    with the same session policy share its compiled form, whose decision cache is kept small (a caller can mint
    many sessions with distinct policies). ``refresh``
    (optional) returns the current keys and active ``kid``; it is called for an unknown ``kid`` as
    :class:`~authmw.tokens.KeyReloads` allows, so keys rotated in by another process are found.
    """

    def __init__(
        self,
        keys: Mapping[str, bytes],
        *,
        active: str | None = None,
        clock: Callable[[], float] = time.time,
        cache_size: int = 10_000,
        refresh: Callable[[], tuple[Mapping[str, bytes], str | None]] | None = None,
        refresh_interval: float = 10.0,
        timer: Callable[[], float] = time.monotonic,
        revision: Callable[[], int] | None = None,
    ) -> None:
        self._set(keys, active)
        self._clock = clock
        self._cache: BoundedCache[str, tuple[Session, AccessKey]] = BoundedCache(cache_size)
        self._compiled: BoundedCache[str, PolicySet] = BoundedCache(1024)
        self._refresh, self._reloads = refresh, KeyReloads(refresh_interval, timer, revision)

    def __repr__(self) -> str:
        return f"SessionSealer(active={self.active!r}, keys={len(self._keys)})"

    def _set(self, keys: Mapping[str, bytes], active: str | None) -> None:
        if any(len(key) != 32 for key in keys.values()):
            raise ConfigurationError("a sealing key is 32 bytes (AES-256)")
        if active is not None and active not in keys:
            raise ConfigurationError("the active sealing key is not among the keys")
        self._keys = {kid: AESGCM(key) for kid, key in keys.items()}
        self.active = active

    def update(self, keys: Mapping[str, bytes], active: str | None) -> None:
        """Open with ``keys`` and seal with ``active`` from now on (the store's after a rotation)."""
        self._set(keys, active)

    def seal(self, session: Session) -> str:
        """The security token of ``session``, sealed under the active key."""
        if self.active is None:
            raise ConfigurationError("no active sealing key: run authmw init")
        payload = {
            "ak": session.access_key,
            "sk": session.secret_key,
            "iat": session.issued_at,
            "exp": session.expires_at,
            "user": [session.user_id, session.user_name, session.domain_id, session.domain_name],
            "mfa": session.mfa,
        }
        if session.agency_id is not None:
            payload["agency"] = [
                session.agency_id,
                session.agency_name,
                session.agency_domain_id,
                session.agency_domain_name,
            ]
        if session.policy is not None:
            payload["policy"] = session.policy
        if session.token_id is not None:
            payload["token"] = [session.token_id, session.iam_token, session.project_id]
        if session.access_key_id is not None:
            payload["key"] = session.access_key_id
        nonce = os.urandom(12)
        sealed = self._keys[self.active].encrypt(nonce, json.dumps(payload).encode(), _aad(self.active))
        return f"{_VERSION}.{self.active}.{base64.urlsafe_b64encode(nonce + sealed).rstrip(b'=').decode()}"

    def open(self, token: str) -> Session:
        """The session a token holds: :class:`InvalidSecurityToken` (malformed, tampered, unknown key) or
        :class:`ExpiredSecurityToken`."""
        return self._open(token)[0]

    def resolve(self, token: str, access_key: str) -> AccessKey:
        """The temporary key of ``token`` if it belongs to ``access_key`` (:class:`SecurityTokenMismatch`)."""
        session, key = self._open(token)
        if session.access_key != access_key:
            raise SecurityTokenMismatch("the security token belongs to another access key")
        return key

    def _open(self, token: str) -> tuple[Session, AccessKey]:
        found = self._cache.get(token)
        now = self._clock()
        if found is not None:
            if found[0].expires_at > now:
                return found
            self._cache.pop(token, None)
            raise ExpiredSecurityToken("the security token has expired")
        session = self._unseal(token)
        if session.expires_at <= now:
            raise ExpiredSecurityToken("the security token has expired")
        owner = session.agency_id or session.user_id
        found = (session, AccessKey(session.access_key, session.secret_key, owner, True, session))
        self._cache.put(token, found)
        return found

    def _key(self, kid: str) -> AESGCM | None:
        key = self._keys.get(kid)
        if key is None and self._refresh is not None and self._reloads.due():
            self._set(*self._refresh())
            key = self._keys.get(kid)
        return key

    def _unseal(self, token: str) -> Session:
        if not isinstance(token, str) or not 0 < len(token) <= _MAX_TOKEN:
            raise InvalidSecurityToken("not a security token")
        version, _, rest = token.partition(".")
        kid, _, body = rest.partition(".")
        key = self._key(kid) if version == _VERSION and kid else None
        if key is None:
            raise InvalidSecurityToken("not a security token of this service (or its sealing key is gone)")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            plain = key.decrypt(raw[:12], raw[12:], _aad(kid))
        except (InvalidTag, ValueError, binascii.Error):
            raise InvalidSecurityToken("the security token was altered or is malformed") from None
        try:
            session = _session_of(json.loads(plain))
        except (KeyError, TypeError, ValueError):  # sealed by us, so only a key compromise or a bug gets here
            raise InvalidSecurityToken("the security token's contents are malformed") from None
        if session.policy is None:
            return session
        compiled = self._compiled.get(session.policy)
        if compiled is None:
            try:
                compiled = PolicySet([parse_policy(session.policy, name="session policy")], cache_size=256)
            except ValueError:
                raise InvalidSecurityToken("the security token's session policy is malformed") from None
            self._compiled.put(session.policy, compiled)
        return replace(session, policies=compiled)


def _aad(kid: str) -> bytes:
    return f"authmw security token {_VERSION} {kid}".encode()


def _session_of(payload: Mapping[str, Any]) -> Session:
    user = payload["user"]
    agency = payload.get("agency") or [None] * 4
    texts = [payload["ak"], payload["sk"], *user]
    if not all(isinstance(t, str) for t in texts) or len(user) != 4 or len(agency) != 4:
        raise TypeError("session fields")
    policy = payload.get("policy")
    if policy is not None and not isinstance(policy, str):
        raise TypeError("policy")
    token_id, iam_token, project_id = payload.get("token") or (None, False, None)
    return Session(
        payload["ak"],
        payload["sk"],
        int(payload["iat"]),
        int(payload["exp"]),
        user[0],
        user[1],
        user[2],
        user[3],
        agency[0],
        agency[1],
        agency[2],
        agency[3],
        policy=policy,
        mfa=bool(payload.get("mfa", False)),
        token_id=token_id,
        iam_token=bool(iam_token),
        project_id=project_id,
        access_key_id=payload.get("key"),
    )
