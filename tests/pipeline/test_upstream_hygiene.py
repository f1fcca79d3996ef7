"""What reaches the app behind authmw: no caller credentials (unless forwarded on purpose), no header whose name
a WSGI server folds onto authmw's, and an assertion that holds only for the request it was made for.

Servers: the real proxy (uvicorn) in front of echo apps on uvicorn and on wsgiref (which folds ``X_Foo`` into
``HTTP_X_FOO``, as ``X-Foo``); the requests are raw bytes on a socket, so header names reach the servers as sent.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from authmw import wsgi
from authmw.assembly import build_guard
from authmw.assertion import InvalidAssertion, keys_from_jwks, verify_assertion
from authmw.proxy import build_app
from authmw.settings import Settings
from tests.support.forms import SETTINGS, running
from tests.support.raw import NB, Ctx, Raw, Reply, exchange, presigned, signed, token
from tests.support.servers import serve_asgi, serve_wsgiref
from tests.support.world import World, echo_asgi, echo_wsgi

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@contextlib.contextmanager
def proxy(world: World, settings: Settings = SETTINGS, *, upstream_wsgi: bool = False) -> Iterator[str]:
    serve = serve_wsgiref(echo_wsgi) if upstream_wsgi else serve_asgi(echo_asgi)
    with serve as upstream, serve_asgi(build_app(replace(settings, upstream=upstream), world.store)) as url:
        yield url


def send(url: str, build: Any, *extra: tuple[str, str]) -> Reply:
    """Send the raw request ``build(host)`` plus ``extra`` headers; the reply with its body de-chunked."""
    split = urlsplit(url)
    raw: Raw = build(split.netloc)
    for name, value in extra:
        raw.add(name, value)
    reply = exchange((split.hostname or "", split.port or 80), raw.encode())
    if reply.headers.get("transfer-encoding") != "chunked":
        return reply
    body, rest = b"", reply.body
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        body, rest = body + rest[: int(size, 16)], rest[int(size, 16) + 2 :]
    return replace(reply, body=body)


def _credential_requests(world: World) -> dict[str, Any]:
    return {
        "aksk": lambda host: signed(Ctx(world, host)),
        "token": lambda host: Raw("GET", NB.replace("{p}", world.project), [("Host", host)]).add(
            "X-Auth-Token", token(Ctx(world, host))
        ),
        "presigned": lambda host: presigned(Ctx(world, host)),
    }


# -- item 8: credentials ---------------------------------------------------------------------------------------

CREDENTIAL_HEADERS = {"authorization", "x-auth-token", "x-security-token", "x-amz-security-token"}


@pytest.mark.parametrize("kind", ["aksk", "token", "presigned"])
def test_the_callers_credentials_do_not_reach_the_upstream(world: World, kind: str) -> None:
    with proxy(world) as url:
        reply = send(url, _credential_requests(world)[kind])
    assert reply.status == 200, reply.body[:300]
    seen = reply.json()
    assert not CREDENTIAL_HEADERS & set(seen["headers"]), seen["headers"]
    assert "x-authmw-assertion" in seen["headers"]


def test_a_presigned_url_loses_its_signature_upstream(world: World) -> None:
    with (
        serve_asgi(_query_echo) as upstream,
        serve_asgi(build_app(replace(SETTINGS, upstream=upstream), world.store)) as url,
    ):
        reply = send(url, _credential_requests(world)["presigned"])
    query = reply.json()["query"]
    assert "X-Amz-Credential=" in query and "X-Amz-Signature" not in query


def test_forward_credentials_keeps_them(world: World) -> None:
    settings = replace(SETTINGS, forward_credentials=True)
    with (
        serve_asgi(_query_echo) as upstream,
        serve_asgi(build_app(replace(settings, upstream=upstream), world.store)) as url,
    ):
        aksk = send(url, _credential_requests(world)["aksk"]).json()
        presigned_url = send(url, _credential_requests(world)["presigned"]).json()
    assert aksk["headers"]["authorization"].startswith("SDK-HMAC-SHA256")
    assert "X-Amz-Signature=" in presigned_url["query"]


async def _query_echo(scope: Any, receive: Any, send_: Any) -> None:
    if scope["type"] != "http":
        return
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    body = json.dumps({"query": scope["query_string"].decode("latin-1"), "headers": headers}).encode()
    await send_({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send_({"type": "http.response.body", "body": body})


def test_the_assertion_is_bound_to_method_path_query_and_request_id(world: World) -> None:
    with running("proxy", world) as form:
        seen = send(form.url, lambda host: signed(Ctx(world, host), "GET", NB, query="limit=5")).json()
        keys = keys_from_jwks(httpx.get(form.url + "/.well-known/jwks.json").json())
    assertion, path = seen["headers"]["x-authmw-assertion"], seen["raw_path"]
    request_id = seen["headers"]["x-authmw-request-id"]
    claims = verify_assertion(assertion, keys, method="GET", path=path, query="limit=5", request_id=request_id)
    assert claims["user-name"] == "scientist" and claims["jti"] == request_id
    replays = [
        {"method": "DELETE", "path": path, "query": "limit=5"},
        {"method": "GET", "path": path + "/nb-1", "query": "limit=5"},
        {"method": "GET", "path": path, "query": "limit=500"},
        {"method": "GET", "path": path, "query": ""},
        {"method": "GET", "path": path, "query": "limit=5", "request_id": "0" * 24},
    ]
    for replay in replays:
        with pytest.raises(InvalidAssertion, match="another request"):
            verify_assertion(assertion, keys, **replay)


def test_the_demo_api_reads_identity_from_the_verified_assertion_only(world: World) -> None:
    """examples/demo_api.py: a forged ``X-Authmw-User-Name`` beside a valid assertion changes nothing, and the
    assertion of another request (or none) is refused."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        import demo_api
    finally:
        sys.path.remove(str(EXAMPLES))
    with running("proxy", world) as form:
        seen = send(form.url, lambda host: signed(Ctx(world, host))).json()
        assertion = seen["headers"]["x-authmw-assertion"]
        demo_api.SIDECAR, _ = form.url, demo_api._keys.clear()
        with serve_asgi(demo_api.app) as api:
            path = NB.replace("{p}", world.project)
            forged = {"X-Authmw-Assertion": assertion, "X-Authmw-User-Name": "admin"}
            genuine = httpx.get(api + path, headers=forged)
            elsewhere = httpx.get(api + path + "/nb-1", headers=forged)
            without = httpx.get(api + path, headers={"X-Authmw-User-Name": "admin"})
    assert genuine.status_code == 200 and genuine.json()["seen_by_api"]["user"] == "scientist"
    assert (elsewhere.status_code, without.status_code) == (401, 401)


# -- item 7: header names with "_" ------------------------------------------------------------------------------

SMUGGLED = [("X_Authmw_Agency", "evil-agency"), ("X_Authmw_User_Name", "admin"), ("X_Foo", "bar")]


def test_underscore_headers_are_dropped_by_the_proxy(world: World) -> None:
    """Behind the proxy a WSGI upstream (wsgiref folds ``_`` into ``-``) saw ``X_Authmw_Agency`` as authmw's
    ``X-Authmw-Agency`` and ``X_Workspace_Id`` as the workspace header."""
    with proxy(world, upstream_wsgi=True) as url:
        ctx = Ctx(world, urlsplit(url).netloc)
        extra = [*SMUGGLED, ("X_Workspace_Id", world.private_ws)]
        reply = send(url, lambda host: signed(ctx), *extra)
    assert reply.status == 200, reply.body[:300]
    headers = reply.json()["headers"]
    assert "x-authmw-agency" not in headers
    assert headers["x-authmw-user-name"] == "scientist"
    assert "x-workspace-id" not in headers and "x-foo" not in headers


def test_kept_underscore_headers_never_fold_onto_protected_names(world: World) -> None:
    settings = replace(SETTINGS, drop_underscore_headers=False)
    with proxy(world, settings, upstream_wsgi=True) as url:
        ctx = Ctx(world, urlsplit(url).netloc)
        extra = [*SMUGGLED, ("X_Workspace_Id", world.private_ws), ("X_Auth_Token", "stolen"), ("X_Bar", "1")]
        reply = send(url, lambda host: signed(ctx).add("X-Bar", "2"), *extra)
    assert reply.status == 200, reply.body[:300]
    headers = reply.json()["headers"]
    assert headers["x-foo"] == "bar"  # kept: folds onto nothing
    assert headers["x-bar"] == "2"  # X_Bar beside X-Bar: the twin is dropped, not merged
    assert "x-authmw-agency" not in headers and headers["x-authmw-user-name"] == "scientist"
    assert "x-workspace-id" not in headers and "x-auth-token" not in headers


def test_the_asgi_middleware_keeps_underscore_twins_of_authmw_headers_from_the_app(world: World) -> None:
    with running("asgi", world) as form:
        ctx = Ctx(world, urlsplit(form.url).netloc)
        reply = send(form.url, lambda host: signed(ctx), *SMUGGLED)
    headers = reply.json()["headers"]
    assert not [name for name in headers if name.replace("_", "-").startswith("x-authmw-")], headers
    assert headers["x_foo"] == "bar"


def test_the_wsgi_middleware_keeps_folded_authmw_headers_from_the_app(world: World) -> None:
    """Behind wsgiref ``X_Authmw_User_Name`` arrives as ``HTTP_X_AUTHMW_USER_NAME``: removed like the real one,
    and ``X_Workspace_Id`` is read as the workspace header it folds into (so it must be signed)."""
    guard = build_guard(SETTINGS, store=world.store)
    with serve_wsgiref(wsgi.AuthMiddleware(echo_wsgi, guard=guard)) as url:
        ctx = Ctx(world, urlsplit(url).netloc)
        reply = send(url, lambda host: signed(ctx), *SMUGGLED)
        moved = send(url, lambda host: signed(ctx), ("X_Workspace_Id", world.private_ws))
    headers = reply.json()["headers"]
    assert not [name for name in headers if name.startswith("x-authmw-")], headers
    assert reply.json()["authmw"]["user"] == "scientist"
    assert (moved.status, moved.json()["error_code"]) == (401, "header_not_signed")


# -- item 3, upstream side: only the configured client-address chain goes upstream -----------------------------


@pytest.mark.parametrize("header", ["x-forwarded-for", "forwarded"])
def test_only_the_configured_forwarding_header_reaches_the_upstream(world: World, header: str) -> None:
    """The header authmw does not read is the client's own writing: an upstream that read it would believe a
    spoofed address, so it is dropped, and the configured one carries the chain with the proxy's peer appended."""
    with proxy(world, replace(SETTINGS, forwarded_header=header)) as url:
        reply = send(
            url,
            _credential_requests(world)["aksk"],
            ("Forwarded", "for=6.6.6.6"),
            ("X-Forwarded-For", "7.7.7.7"),
        )
    assert reply.status == 200, reply.body[:300]
    seen = reply.json()["headers"]
    if header == "forwarded":
        assert "x-forwarded-for" not in seen, seen
        assert seen["forwarded"] == "for=6.6.6.6, for=127.0.0.1"
    else:
        assert "forwarded" not in seen, seen
        assert seen["x-forwarded-for"] == "7.7.7.7, 127.0.0.1"
