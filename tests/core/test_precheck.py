"""``Guard.precheck``: what the head alone decides is refused before the body is read, with the code ``check``
would give; everything else (the signature, the body) waits for ``check``."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from authmw.errors import AuthmwError, InvalidToken
from authmw.models import Request
from authmw.oidc import OidcIssuer, TrustedIssuer
from tests.support.guard_world import CLIENT, MAIN, NOTEBOOKS, P1, T0, World, call, guard

JOBS = f"/v2/{P1}/training-jobs"


@pytest.fixture
def world() -> World:
    return World()


def head_only(request: Request) -> Request:
    return replace(request, body=b"")


def precheck_code(world: World, request: Request, **options: object) -> str | None:
    try:
        guard(world, **options).precheck(head_only(request))
    except AuthmwError as exc:
        context = exc.context  # audited like a refusal of check()
        return exc.code if context is not None and context.request_id == "req-1" else "no context"
    return None


def test_a_good_head_passes_and_check_still_reads_the_body(world: World) -> None:
    request = call("POST", JOBS, body=b'{"kind": "job"}', headers={"Content-Type": "application/json"})
    assert precheck_code(world, request) is None
    tampered = replace(request, body=b'{"kind": "other"}')
    assert precheck_code(world, tampered) is None  # the signature is the body's business: check() refuses it
    with pytest.raises(AuthmwError, match="signature"):
        guard(world).check(tampered)


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (call("POST", JOBS, user=None), "missing_credentials"),
        (call("POST", JOBS, user="nobody"), "signature_mismatch"),  # an unknown access key, as check() says
        (call("POST", JOBS, at=T0 - 3600), "date_out_of_window"),
        (call("POST", "/nowhere"), "route_not_allowed"),
        (call("POST", JOBS, user=None, headers={"Authorization": "Basic YTpi"}), "unsupported_scheme"),
        (call("POST", JOBS, unsigned={"X-Workspace-Id": "0"}), "header_not_signed"),
    ],
    ids=["unsigned", "unknown-key", "stale-date", "no-route", "other-scheme", "unsigned-workspace"],
)
def test_what_the_head_decides_is_refused_with_checks_code(world: World, request_: Request, code: str) -> None:
    assert precheck_code(world, request_) == code
    with pytest.raises(AuthmwError) as checked:
        guard(world).check(request_)
    assert checked.value.code == code


def test_dry_run_never_refuses(world: World) -> None:
    assert precheck_code(world, call("POST", JOBS, user=None), mode="dry-run") is None


def test_a_public_route_needs_no_credential(world: World) -> None:
    from authmw.routes import Access, Route

    routes = [Route("POST", "/upload", access=Access.PUBLIC)]
    assert precheck_code(world, call("POST", "/upload", user=None), routes=routes) is None


def test_iam_tokens_are_checked_from_the_head(world: World) -> None:
    token = Request.build("POST", NOTEBOOKS, {"X-Auth-Token": "not-a-token", "Host": "h"})
    assert precheck_code(world, token) == "scheme_disabled"


# -- tokens of an external issuer ---------------------------------------------------------------------------------

ISS = "https://idp.example"
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Keys:
    """An issuer's key set at hand (one RSA key, ``k1``); records every lookup, which could start a fetch."""

    algorithms = ("RS256",)

    def __init__(self) -> None:
        self.lookups: list[str] = []

    def check(self) -> None:
        pass

    def key(self, kid: str) -> tuple[str, Any]:
        self.lookups.append(kid)
        if kid != "k1":
            raise InvalidToken("unknown signing key")
        return "RS256", _KEY.public_key()

    def __contains__(self, kid: object) -> bool:
        return kid == "k1"


class Users(World):
    def user_id(self, domain: str, name: str) -> str | None:
        return f"u-{name}" if f"u-{name}" in self.principals else None


def token(kid: str = "k1", key: Any = _KEY, **claims: Any) -> str:
    payload = {"iss": ISS, "sub": "s-1", "aud": "authmw", "name": "alice", "iat": T0, "exp": T0 + 600, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, "RS256", headers={"kid": kid})


def forged(header: dict[str, Any], payload: dict[str, Any]) -> str:
    def b64(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{b64(header)}.{b64(payload)}.AAAA"


def external(world: World, keys: Keys, **options: object) -> Any:
    issuer = OidcIssuer(issuer=ISS, keys=keys, audience="authmw", user_claim="name", clock=world.clock)
    return guard(world, issuers=[TrustedIssuer(ISS, MAIN, issuer)], **options)


def with_token(value: str) -> Request:
    headers = {"X-Auth-Token": value, "Host": "h", "Content-Length": str(12 * 1024 * 1024)}
    return Request.build("POST", JOBS, headers, b"", CLIENT)


OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (forged({"alg": "RS256", "kid": "x"}, {"iss": ISS}), "invalid_token"),  # the review's: only iss
        (forged({"alg": "RS256", "kid": "k1"}, {"iss": ISS}), "invalid_token"),
        (token(key=OTHER_KEY), "invalid_token"),  # a cached kid: the signature is checked
        (token(kid="k9", exp=T0 - 3600, iat=T0 - 7200), "token_expired"),
        (token(kid="k9", aud="someone-else"), "invalid_token"),
        (token(kid="k9", nbf=T0 + 3600), "invalid_token"),
        (token(kid="k9", name=None), "invalid_token"),
        (forged({"alg": "none", "kid": "k9"}, {"iss": ISS}), "invalid_token"),
    ],
    ids=["only-iss", "known-kid-no-claims", "wrong-signature", "expired", "audience", "not-yet", "no-user", "alg-none"],
)
def test_a_forged_external_token_is_refused_before_the_body(world: World, value: str, code: str) -> None:
    # Passing on an unverified iss let anyone make the adapter read and hold a 12 MiB body.
    keys = Keys()
    with pytest.raises(AuthmwError) as raised:
        external(world, keys).precheck(with_token(value))
    assert raised.value.code == code
    assert "k9" not in keys.lookups and "x" not in keys.lookups  # an unknown kid starts no refetch here


def test_an_external_token_of_an_unknown_kid_is_left_to_check(world: World) -> None:
    # A key rotated in since the last fetch: check() (after the body) looks for it; what needs no key was checked.
    users, keys = Users(), Keys()
    external(users, keys).precheck(with_token(token(kid="k9")))
    assert keys.lookups == []
    with pytest.raises(InvalidToken):
        external(users, keys).check(with_token(token(kid="k9")))
    external(users, keys).precheck(with_token(token()))  # a valid token passes, and check() admits it
    assert external(users, keys).check(with_token(token())).principal.user_name == "alice"
