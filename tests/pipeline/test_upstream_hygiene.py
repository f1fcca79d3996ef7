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
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from authmw import wsgi
from authmw.assembly import open_guard
from authmw.assertion import (
    ISSUER,
    InvalidAssertion,
    UsedAssertions,
    keys_from_jwks,
    sign_assertion,
    verify_assertion,
)
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
    """examples/demo_api.py: a forged ``X-Authmw-User-Name`` beside a valid assertion changes nothing; the
    assertion of another request, for another upstream, or used a second time (or none) is refused."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        import demo_api
    finally:
        sys.path.remove(str(EXAMPLES))
    with serve_asgi(demo_api.app) as api:
        demo_api.AUDIENCE = api  # the sidecar's default audience when the API is its upstream: its origin
        # The echo upstream shows the assertion; the first proxy addresses it to the API, the second to the echo.
        with proxy(world, replace(SETTINGS, assertion_audience=api)) as url, proxy(world) as elsewhere_url:
            assertion = send(url, lambda host: signed(Ctx(world, host))).json()["headers"]["x-authmw-assertion"]
            other = send(elsewhere_url, lambda host: signed(Ctx(world, host))).json()["headers"]["x-authmw-assertion"]
            demo_api.SIDECAR, _ = url, demo_api._keys.clear()
            path = NB.replace("{p}", world.project)
            forged = {"X-Authmw-Assertion": assertion, "X-Authmw-User-Name": "admin"}
            elsewhere = httpx.get(api + path + "/nb-1", headers=forged)
            genuine = httpx.get(api + path, headers=forged)
            again = httpx.get(api + path, headers=forged)
            without = httpx.get(api + path, headers={"X-Authmw-User-Name": "admin"})
            other_upstream = httpx.get(api + path, headers={"X-Authmw-Assertion": other})
    assert genuine.status_code == 200 and genuine.json()["seen_by_api"]["user"] == "scientist"
    assert (elsewhere.status_code, without.status_code) == (401, 401)
    assert (again.status_code, again.json()["error"]) == (401, "assertion refused: assertion already used")
    assert other_upstream.status_code == 401 and "another upstream" in other_upstream.json()["error"]


# -- review finding 10: the assertion names its upstream, and is used once -------------------------------------


def test_the_assertion_is_addressed_to_the_upstream(world: World) -> None:
    """Every sidecar of one store signs with the same key: an assertion captured at upstream A was valid at B
    for the same request. Now it carries ``aud`` (default: the origin of the proxy's upstream URL)."""
    with proxy(world) as url:
        seen = send(url, lambda host: signed(Ctx(world, host))).json()
        keys = keys_from_jwks(httpx.get(url + "/.well-known/jwks.json").json())
    assertion, path = seen["headers"]["x-authmw-assertion"], seen["raw_path"]
    audience = f"http://{seen['headers']['host']}"  # the echo upstream, as the proxy addresses it
    claims = verify_assertion(assertion, keys, method="GET", path=path, query="", audience=audience)
    assert claims["aud"] == audience
    with pytest.raises(InvalidAssertion, match="another upstream"):
        verify_assertion(assertion, keys, method="GET", path=path, query="", audience="http://127.0.0.1:1")


def test_the_sidecar_recipe_refuses_an_assertion_for_another_upstream_or_used_twice(world: World) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "adapters" / "sidecar"))
    try:
        import upstream as recipe
    finally:
        sys.path.pop(0)
    server = recipe.make_server(0)
    try:
        with proxy(world) as url, proxy(world, replace(SETTINGS, assertion_audience=server.audience)) as ours:
            server.sidecar = url
            path = NB.replace("{p}", world.project)
            theirs = send(url, lambda host: signed(Ctx(world, host))).json()["headers"]["x-authmw-assertion"]
            mine = send(ours, lambda host: signed(Ctx(world, host))).json()["headers"]["x-authmw-assertion"]
            with pytest.raises(InvalidAssertion, match="another upstream"):
                server.claims(theirs, "GET", path)
            assert server.claims(mine, "GET", path)["user-name"] == "scientist"
            with pytest.raises(InvalidAssertion, match="already used"):
                server.claims(mine, "GET", path)
    finally:
        server.server_close()


def test_used_assertions_are_remembered_until_they_expire_and_never_forgotten_early() -> None:
    now = [1000.0]
    used = UsedAssertions(2, leeway=5, clock=lambda: now[0])
    used.use({"jti": "a", "exp": 1060})
    with pytest.raises(InvalidAssertion, match="already used"):
        used.use({"jti": "a", "exp": 1060})
    used.use({"jti": "b", "exp": 1070})
    with pytest.raises(InvalidAssertion, match="too many"):  # full of live ones: refused, none forgotten
        used.use({"jti": "c", "exp": 1070})
    now[0] = 1066.0  # "a" is past exp + leeway: it could not pass verify_assertion any more
    used.use({"jti": "c", "exp": 1126})
    with pytest.raises(InvalidAssertion, match="already used"):
        used.use({"jti": "b", "exp": 1070})


def test_the_assertion_is_the_jws_pyjwt_makes_and_verifies() -> None:
    """sign_assertion writes the compact JWS itself (the hot path): byte for byte what ``jwt.encode`` makes of the
    same claims, key and ``kid``, with non-ASCII claims and without an audience too, and accepted by
    verify_assertion; a flipped payload byte is refused."""
    key = ed25519.Ed25519PrivateKey.generate()
    claims = {"user-name": "Jürgen", "user-id": "u1", "action": "modelarts:notebook:list"}
    for audience in ("http://127.0.0.1:9000", None):
        token = sign_assertion(
            claims, key, "kid-1", method="GET", path="/v1/p/x", query="a=1", request_id="r1", now=1_000_000,
            audience=audience,
        )  # fmt: skip
        payload = {**claims, "iss": ISSUER, "iat": 1_000_000, "exp": 1_000_060, "htm": "GET", "htu": "/v1/p/x",
                   "htq": "a=1", "jti": "r1", **({} if audience is None else {"aud": audience})}  # fmt: skip
        assert token == jwt.encode(payload, key, algorithm="EdDSA", headers={"kid": "kid-1"})
    token = sign_assertion(claims, key, "k", method="GET", path="/p", query="", request_id="r2", audience="a")
    got = verify_assertion(token, {"k": key.public_key()}, method="GET", path="/p", query="", audience="a")
    assert (got["user-name"], got["jti"]) == ("Jürgen", "r2")
    head, body, signature = token.split(".")
    forged = f"{head}.{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}.{signature}"
    with pytest.raises(InvalidAssertion):
        verify_assertion(forged, {"k": key.public_key()}, method="GET", path="/p", query="", audience="a")


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
    guard = open_guard(world.store, config=SETTINGS)
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


# -- review finding 6: the caller's address, proto and host headers never reach the upstream ---------------------


def test_the_callers_address_proto_and_host_headers_are_replaced_by_the_proxys(world: World) -> None:
    """The upstream got the client's ``X-Real-IP``, ``True-Client-IP`` and ``X-Client-IP``, and the client's
    ``X-Forwarded-Proto``/``X-Forwarded-Host`` ahead of the proxy's (a framework taking the first value believed
    them); now only the proxy's own values arrive."""
    spoofed = [
        ("X-Real-IP", "6.6.6.6"),
        ("True-Client-IP", "6.6.6.6"),
        ("X-Client-IP", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
    ]
    with serve_asgi(_raw_headers_echo) as upstream:
        app = build_app(replace(SETTINGS, upstream=upstream), world.store)
        with serve_asgi(app) as url:
            reply = send(url, _credential_requests(world)["aksk"], *spoofed)
    assert reply.status == 200, reply.body[:300]
    seen = [(name.lower(), value) for name, value in reply.json()]
    assert not [value for _name, value in seen if value in ("6.6.6.6", "https", "evil.example")], seen
    names = [name for name, _value in seen]
    assert not {"x-real-ip", "true-client-ip", "x-client-ip"} & set(names), seen
    assert [value for name, value in seen if name == "x-forwarded-proto"] == ["http"]
    assert [value for name, value in seen if name == "x-forwarded-host"] == [urlsplit(url).netloc]
    assert [value for name, value in seen if name == "x-forwarded-for"] == ["127.0.0.1"]


async def _raw_headers_echo(scope: Any, receive: Any, send_: Any) -> None:
    """Every header the upstream received, repeated names and order kept."""
    if scope["type"] != "http":
        return
    body = json.dumps([[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]).encode()
    await send_({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send_({"type": "http.response.body", "body": body})


# -- review finding 7: the ASGI middleware applies the proxy's fold rule ----------------------------------------


def test_the_asgi_middleware_keeps_underscore_twins_of_protected_names_from_the_app(world: World) -> None:
    """``X_Workspace_Id: PRIVATE`` was admitted in the workspace the guard checked (it reads ``X-Workspace-Id``)
    and handed to the app, which behind a WSGI bridge sees ``HTTP_X_WORKSPACE_ID``; so were credential and
    forwarding twins. Now the app sees none of them; ``_`` names folding onto nothing protected still pass."""
    twins = [
        ("X_Workspace_Id", world.private_ws),
        ("X_Project_Id", "0" * 32),
        ("X_Auth_Token", "stolen"),
        ("X_Forwarded_For", "6.6.6.6"),
        ("Content_Length", "5"),
        ("X_Foo", "bar"),
    ]
    with running("asgi", world) as form:
        ctx = Ctx(world, urlsplit(form.url).netloc)
        reply = send(form.url, lambda host: signed(ctx), *twins)
    assert reply.status == 200, reply.body[:300]
    seen = reply.json()
    folded = {name.replace("_", "-") for name in seen["headers"] if "_" in name}
    assert folded == {"x-foo"}, seen["headers"]
    assert seen["authmw"]["workspace"] != world.private_ws
