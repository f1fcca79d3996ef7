"""``Guard.precheck``: what the head alone decides is refused before the body is read, with the code ``check``
would give; everything else (the signature, the body) waits for ``check``."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_guard import NOTEBOOKS, P1, T0, World, call, guard

from authmw.errors import AuthmwError
from authmw.models import Request

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
