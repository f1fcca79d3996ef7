"""The agency (STS) rule: who may obtain temporary credentials, as whom, for how long (no I/O of its own).

:func:`assume` decides and builds the :class:`~authmw.sessions.Session` and its sealed security token; the
security-token endpoint (:mod:`authmw.iam_api`) and ``authmw agency assume`` call it. The agency is looked up
through the store's ``find_agency`` (:class:`Agencies`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from authmw.errors import (
    ActionDenied,
    AgencyNotTrusted,
    ExpiredToken,
    InvalidDuration,
    InvalidPolicy,
    InvalidSessionPolicy,
    NotFound,
)
from authmw.identity import policy_facts
from authmw.models import AuthMethod, Credential, CredentialKind, Principal, Session
from authmw.policy import parse_policy
from authmw.sessions import DEFAULT_DURATION, MAX_DURATION, MIN_DURATION, SessionSealer, new_temporary_key
from authmw.tokens import iso_time

__all__ = ["ASSUME_ACTION", "Agencies", "Agency", "assume"]

#: The IAM action a caller needs (besides the agency's trust) to assume an agency.
ASSUME_ACTION = "iam:agencies:assume"
_MAX_SESSION_POLICY = 2048  # characters of compact JSON: the policy travels inside every request's token


class Agency(Protocol):
    """What :func:`assume` reads of an agency (the store's ``records.Agency``)."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def domain_id(self) -> str: ...
    @property
    def trust_domain(self) -> str: ...
    @property
    def max_duration(self) -> int: ...


class Agencies(Protocol):
    """Where :func:`assume` finds an agency (the store)."""

    def find_agency(self, name: str, *, domain: str) -> tuple[Agency, str]:
        """The agency ``name`` of the domain named (or with the id) ``domain``, and that domain's name; raises
        :class:`~authmw.errors.NotFound`."""
        ...


def assume(
    store: Agencies,
    sealer: SessionSealer,
    principal: Principal,
    *,
    agency: tuple[str, str] | None = None,
    duration: int = DEFAULT_DURATION,
    policy: str | None = None,
    caller: Credential | None = None,
    source_ip: str | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[Session, str]:
    """Temporary credentials for an authenticated caller (not itself temporary): its own identity (``agency``
    None: the ``token`` method) or the agency ``(domain name or id, agency name)``, which must trust the caller's
    domain and which the caller's policies must allow it to assume (``iam:agencies:assume`` on
    ``iam::<domain_id>:agency:<name>``, with ``g:CurrentTime``, ``g:SourceIp`` and the caller's facts).

    ``duration`` (900-86400 s) is capped by the agency's maximum; ``policy`` (a policy document as JSON text, at
    most 2048 characters) narrows the session. ``caller`` is the credential the caller authenticated with: a
    session never outlives its token, keeps an IAM token's project scope, and ends when that token is revoked.
    Returns the session and its sealed security token.
    """
    if not MIN_DURATION <= duration <= MAX_DURATION:
        raise InvalidDuration(f"duration_seconds must be {MIN_DURATION}-{MAX_DURATION}")
    if policy is not None:
        _check_session_policy(policy)
    now = int(clock())
    mfa = caller is not None and caller.mfa
    acting: tuple[str | None, str | None, str | None, str | None] = (None, None, None, None)
    if agency is not None:
        domain, name = agency
        try:
            found, domain_name = store.find_agency(name, domain=domain)
        except NotFound:  # answered as an untrusted agency: a caller learns nothing about other domains
            raise AgencyNotTrusted(f"no agency {name!r} of domain {domain!r} trusts the caller") from None
        if found.trust_domain not in (principal.domain_name, principal.domain_id):
            raise AgencyNotTrusted(f"no agency {name!r} of domain {domain!r} trusts the caller")
        facts = policy_facts(principal, current_time=iso_time(now, micros=False), mfa=mfa, source_ip=source_ip)
        decision = principal.policies.decide(ASSUME_ACTION, f"iam::{found.domain_id}:agency:{found.name}", facts)
        if not decision.allowed:
            raise ActionDenied(f"{ASSUME_ACTION}: {decision.reason}")
        duration = min(duration, found.max_duration)
        acting = (found.id, found.name, found.domain_id, domain_name)
    expires_at = now + duration
    origin = caller if caller is not None and caller.method is AuthMethod.TOKEN else None  # asked with a token
    if origin is not None and origin.expires_at is not None:
        expires_at = min(expires_at, origin.expires_at)
        if expires_at <= now:  # a token inside the verifier's leeway: nothing left to give
            raise ExpiredToken("the token has expired")
    signed_with = caller.access_key if caller is not None and caller.method is AuthMethod.AKSK else None
    access, secret = new_temporary_key()
    session = Session(
        access,
        secret,
        now,
        expires_at,
        principal.user_id,
        principal.user_name,
        principal.domain_id,
        principal.domain_name,
        *acting,
        policy=policy,
        mfa=mfa,
        token_id=None if origin is None else origin.access_key,
        iam_token=origin is not None and origin.kind is CredentialKind.IAM_TOKEN,
        project_id=None if origin is None else origin.project,
        access_key_id=signed_with,
    )
    return session, sealer.seal(session)


def _check_session_policy(policy: str) -> None:
    if len(policy) > _MAX_SESSION_POLICY:
        raise InvalidSessionPolicy(f"the session policy must be at most {_MAX_SESSION_POLICY} characters of JSON")
    try:
        parse_policy(policy, name="session policy")
    except InvalidPolicy as exc:
        raise InvalidSessionPolicy(str(exc)) from None
    except RecursionError:
        raise InvalidSessionPolicy("the session policy is nested too deeply") from None
