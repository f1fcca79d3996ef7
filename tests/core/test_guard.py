"""The request pipeline (SPEC §2) step by step over an in-memory identity source, with an injected clock."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from authmw.clientaddr import IpWhitelist
from authmw.errors import ConfigurationError
from authmw.guard import SIGNED_IF_PRESENT, Guard
from authmw.models import AuthContext, AuthMethod, AuthType, Request, WhitelistScope, Workspace
from authmw.policy import PolicySet
from authmw.routes import Access, Route, RouteCatalog
from authmw.signing import Verifier, presign_url, sign_request
from tests.support.guard_world import (
    CLIENT,
    HOST,
    MAIN,
    NOTEBOOKS,
    P1,
    P2,
    SERVICE,
    T0,
    T0_TEXT,
    WS_FOREIGN,
    WS_INTERNAL,
    WS_PRIVATE,
    WS_PUBLIC,
    WS_UNKNOWN,
    World,
    actions_of,
    allow,
    authorize_error,
    call,
    code_of,
    deny,
    guard,
    refused,
)


@pytest.fixture
def world() -> World:
    return World()


def test_a_signed_request_passes_and_is_tagged(world: World) -> None:
    context = guard(world).check(call())
    assert isinstance(context, AuthContext)
    assert context.request_id == "req-1"
    assert context.client == CLIENT
    assert context.route is not None and context.route.name == "GET /v1/{project_id}/notebooks"
    assert context.action == "modelarts:notebook:list"
    assert context.resource is None
    assert context.principal is not None and context.principal.user_id == "u-alice"
    assert context.credential is not None and context.credential.access_key == "AK-alice"
    assert context.auth_method is AuthMethod.AKSK
    assert context.workspace_id == "0"
    assert context.project is not None and context.project.id == P1
    assert context.decision is not None and context.decision.allowed
    assert (context.decision.policy, context.decision.statement) == ("p", 0)
    assert context.error is None


def test_authenticate_returns_the_credential_and_principal(world: World) -> None:
    credential, principal = guard(world).authenticate(call(user="bob"))
    assert (credential.access_key, credential.owner, credential.signed_at) == ("AK-bob", "u-bob", T0)
    assert principal.user_name == "bob"


def test_request_ids_are_random_by_default(world: World) -> None:
    checker = Guard(identity=world, clock=world.clock)
    first, second = checker.check(call()).request_id, checker.check(call(at=T0 + 1)).request_id
    assert first != second
    assert len(first) == 24 and int(first, 16) >= 0


def test_an_unknown_mode_is_refused(world: World) -> None:
    with pytest.raises(ConfigurationError, match="mode"):
        guard(world, mode="audit")


def test_a_verifier_that_would_accept_unsigned_placing_headers_is_refused(world: World) -> None:
    with pytest.raises(ConfigurationError, match="signed_if_present"):
        guard(world, verifier=Verifier(keys=world))
    assert guard(world, verifier=Verifier(keys=world, signed_if_present=SIGNED_IF_PRESENT)).verifier is not None


# -- 1. client address ---------------------------------------------------------------------------------------


def test_the_client_is_the_socket_peer_by_default(world: World) -> None:
    context = guard(world).check(call(client="198.51.100.7", unsigned={"X-Forwarded-For": "192.0.2.1"}))
    assert context.client == "198.51.100.7"
    assert context.policy_context["g:sourceip"] == "198.51.100.7"


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("10.1.2.3", {"X-Forwarded-For": "6.6.6.6, 198.51.100.7"}, "198.51.100.7"),
        ("10.1.2.3", {"X-Forwarded-For": "198.51.100.7, 10.9.9.9"}, "198.51.100.7"),
        ("10.1.2.3", {"Forwarded": 'for="[2001:db8::7]:4711"'}, "10.1.2.3"),  # not the configured header
        ("10.1.2.3", {}, "10.1.2.3"),
        ("198.51.100.8", {"X-Forwarded-For": "10.0.0.1"}, "198.51.100.8"),  # an untrusted peer is not believed
        ("::ffff:198.51.100.8", {}, "198.51.100.8"),
    ],
)
def test_the_client_behind_trusted_proxies(world: World, peer: str, forwarded: dict[str, str], client: str) -> None:
    context = guard(world, trusted_proxies=["10.0.0.0/8"]).check(call(client=peer, unsigned=forwarded))
    assert context.client == client
    assert context.policy_context["g:sourceip"] == client


def test_whitelists_see_the_forwarded_client(world: World) -> None:
    world.allow_only(WhitelistScope.USER, "u-alice", "198.51.100.0/24")
    checker = guard(world, trusted_proxies=["10.0.0.0/8"])
    checker.check(call(client="10.1.2.3", unsigned={"X-Forwarded-For": "198.51.100.7"}))
    assert code_of(checker, call(client="10.1.2.3", unsigned={"X-Forwarded-For": "192.0.2.7"}, at=T0 + 1)) == (
        "address_not_allowed"
    )
    assert code_of(guard(world), call(client="10.1.2.3", unsigned={"X-Forwarded-For": "198.51.100.7"})) == (
        "address_not_allowed"
    )


def test_bad_trusted_proxies_are_a_configuration_error(world: World) -> None:
    with pytest.raises(ConfigurationError, match="trusted_proxies"):
        guard(world, trusted_proxies=["10.0.0.1/8"])


def test_a_spoofed_forwarded_header_does_not_pass_a_whitelist(world: World) -> None:
    # The load balancer (10.1.2.3) appends the real client to X-Forwarded-For and passes Forwarded through.
    world.allow_only(WhitelistScope.USER, "u-alice", "192.0.2.0/24")
    checker = guard(world, trusted_proxies=["10.0.0.0/8"])
    spoofed = {"Forwarded": "for=192.0.2.7", "X-Forwarded-For": "198.51.100.7"}
    assert code_of(checker, call(client="10.1.2.3", unsigned=spoofed)) == "address_not_allowed"
    rfc7239 = guard(world, trusted_proxies=["10.0.0.0/8"], forwarded_header="forwarded")
    context = rfc7239.check(
        call(client="10.1.2.3", unsigned={"Forwarded": "for=192.0.2.7", "X-Forwarded-For": "6.6.6.6"})
    )
    assert context.client == "192.0.2.7" and context.policy_context["g:sourceip"] == "192.0.2.7"
    assert code_of(rfc7239, call(client="10.1.2.3", unsigned={"X-Forwarded-For": "192.0.2.7"}, at=T0 + 1)) == (
        "address_not_allowed"  # X-Forwarded-For is not read when Forwarded is the configured header
    )


@pytest.mark.parametrize("header", ["X-Real-IP", "x-forwarded-host", "", "Forwarded "])
def test_an_unknown_forwarded_header_is_a_configuration_error(world: World, header: str) -> None:
    with pytest.raises(ConfigurationError, match="forwarded_header"):
        guard(world, trusted_proxies=["10.0.0.0/8"], forwarded_header=header)


# -- 2. route → action, unmatched ----------------------------------------------------------------------------


def test_unmatched_is_denied_by_default_before_any_credential_is_read(world: World) -> None:
    error = refused(guard(world), call(path="/v1/p/unknown", user=None))
    assert error.code == "route_not_allowed"
    assert error.context.route is None and error.context.principal is None
    assert code_of(guard(world), call("PATCH", NOTEBOOKS)) == "route_not_allowed"


def test_unmatched_authenticate_only(world: World) -> None:
    checker = guard(world, unmatched="authenticate-only")
    assert code_of(checker, call(path="/custom/thing", user=None)) == "missing_credentials"
    context = checker.check(call(path="/custom/thing"))
    assert context.principal is not None and context.principal.user_name == "alice"
    assert (context.route, context.action, context.decision) == (None, None, None)
    assert context.workspace_id == "0"
    assert context.policy_context["g:userid"] == "u-alice"
    # the workspace and the whitelists still apply
    assert code_of(checker, call(path="/custom/thing", user="frank", query=f"workspace_id={WS_PRIVATE}")) == (
        "workspace_denied"
    )
    world.allow_only(WhitelistScope.USER, "u-alice", "192.0.2.0/24")
    assert code_of(checker, call(path="/custom/thing", at=T0 + 1)) == "address_not_allowed"
    # and a matched route is still authorized
    world.rules("frank", allow("modelarts:notebook:list"))
    assert code_of(checker, call("POST", NOTEBOOKS, user="frank")) == "action_denied"


def test_unmatched_is_not_silently_dropped_with_a_catalog(world: World) -> None:
    # Guard(routes=RouteCatalog(...), unmatched=...) must apply the argument or refuse it, never ignore it:
    # the catalog's own (possibly lenient) policy would otherwise win without a word.
    lenient = RouteCatalog(PUBLIC_ROUTES, unmatched="public")
    try:
        checker = guard(world, routes=lenient, unmatched="deny")
    except ConfigurationError:
        return
    assert code_of(checker, call(path="/unrouted", user=None)) == "route_not_allowed"


def test_unmatched_public(world: World) -> None:
    checker = guard(world, unmatched="public")
    context = checker.check(call(path="/custom/thing", user=None))
    assert (context.principal, context.credential, context.workspace, context.decision) == (None, None, None, None)
    # nothing is verified, not even a broken signature
    checker.check(call(path="/custom/thing", user=None, unsigned={"Authorization": "SDK-HMAC-SHA256 garbage"}))
    # strict path reading still applies to unmatched paths
    assert code_of(checker, call(path="/custom/a%2Fb", user=None)) == "ambiguous_path"
    assert code_of(checker, call(path="/custom/../v1", user=None)) == "ambiguous_path"


PUBLIC_ROUTES = [
    Route("GET", "/healthz", access=Access.PUBLIC),
    Route("GET", "/docs/{page}", "svc:docs:read", access=Access.PUBLIC),
    Route("GET", "/me", access=Access.AUTHENTICATE_ONLY),
    Route("GET", "/v1/{project_id}/things/{thing_id}", "svc:thing:get", resource="svc:*:*:thing:{thing_id}"),
    Route("GET", "/things", "svc:thing:list"),
]


def test_public_routes_skip_authentication(world: World) -> None:
    checker = guard(world, routes=PUBLIC_ROUTES)
    context = checker.check(call(path="/healthz", user=None))
    assert context.route is not None and context.route.access is Access.PUBLIC
    assert (context.principal, context.decision, context.workspace) == (None, None, None)
    assert context.allowed_actions == ()
    docs = checker.check(call(path="/docs/intro", user=None, unsigned={"X-Auth-Token": "anything"}))
    assert docs.action == "svc:docs:read"
    assert docs.decision is None


def test_authenticate_only_routes_need_a_credential_but_no_action(world: World) -> None:
    checker = guard(world, routes=PUBLIC_ROUTES)
    assert code_of(checker, call(path="/me", user=None)) == "missing_credentials"
    context = checker.check(call(path="/me", user="dave"))  # dave has no policy at all
    assert context.principal is not None and context.principal.user_name == "dave"
    assert context.decision is None


def test_a_route_resource_reaches_the_policy(world: World) -> None:
    world.rules("alice", allow("svc:thing:get", Resource=["svc:*:*:thing:t1"]))
    checker = guard(world, routes=PUBLIC_ROUTES)
    context = checker.check(call(path=f"/v1/{P1}/things/t1"))
    assert context.resource == "svc:*:*:thing:t1"
    assert code_of(checker, call(path=f"/v1/{P1}/things/t2")) == "action_denied"


def test_head_is_authorized_as_get(world: World) -> None:
    # Frameworks answer HEAD with the GET handler: with a lenient `unmatched`, an unrouted HEAD would run it
    # without the GET route's action being checked.
    world.rules("frank", allow("modelarts:notebook:list"))
    checker = guard(world, unmatched="authenticate-only")
    assert checker.check(call("HEAD", NOTEBOOKS, user="frank")).action == "modelarts:notebook:list"
    error = refused(checker, call("HEAD", f"{NOTEBOOKS}/n1", user="frank"))
    assert error.code == "action_denied"
    assert error.context.action == "modelarts:notebook:get"


# -- strict path reading ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "code"),
    [
        (f"{NOTEBOOKS}/a%2Fb", "ambiguous_path"),
        (f"{NOTEBOOKS}/a;b", "ambiguous_path"),
        (f"{NOTEBOOKS}/a%2Eb", "ambiguous_path"),
        (f"{NOTEBOOKS}/../../v2/{P1}/training-jobs", "ambiguous_path"),
        (f"{NOTEBOOKS}/%2e%2e", "ambiguous_path"),
        (f"{NOTEBOOKS}/a%00", "ambiguous_path"),
        (f"{NOTEBOOKS}/%zz", "invalid_encoding"),
        (f"{NOTEBOOKS}/%FF", "invalid_encoding"),
    ],
)
def test_strict_paths(world: World, path: str, code: str) -> None:
    error = refused(guard(world), call(path=path, user=None))
    assert error.code == code
    assert error.context.principal is None


def test_lenient_paths(world: World) -> None:
    context = guard(world, strict_paths=False).check(call(path=f"{NOTEBOOKS}/a%2Fb"))
    assert context.action == "modelarts:notebook:get"


def test_raw_bytes_that_are_not_utf8_are_an_encoding_error(world: World) -> None:
    # Request.build keeps undecodable bytes as surrogate escapes; next to a %-escape they must still be a 400
    # (invalid_encoding), never an exception the adapters answer with 500.
    for target in (b"/v1/p/notebooks/%41\xff", b"/v1/p/notebooks/\xff"):
        request = Request.build("GET", target, {"Host": "x"}, b"", CLIENT)
        assert code_of(guard(world), request) == "invalid_encoding"


# -- 3. authentication ----------------------------------------------------------------------------------------


def test_missing_credentials(world: World) -> None:
    error = refused(guard(world), call(user=None))
    assert error.code == "missing_credentials"
    assert "WWW-Authenticate" in error.headers
    assert error.context.route is not None and error.context.action == "modelarts:notebook:list"


def test_iam_tokens_are_not_enabled(world: World) -> None:
    error = refused(guard(world), call(user=None, unsigned={"X-Auth-Token": "MIIE..."}))
    assert error.code == "scheme_disabled"
    assert error.status == 401


@pytest.mark.parametrize(
    ("query", "signed"),
    [
        ("", True),
        (
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20240501%2Fr%2Fs%2Faws4_request&X-Amz-Signature=00",
            False,
        ),
    ],
    ids=["authorization", "presigned"],
)
def test_a_token_and_a_signature_are_two_credentials(world: World, query: str, signed: bool) -> None:
    request = call(query=query, user="alice" if signed else None, unsigned={"X-Auth-Token": "MIIE..."})
    assert code_of(guard(world), request) == "multiple_credentials"


def test_a_wrong_signature_and_an_unknown_key_look_the_same(world: World) -> None:
    assert code_of(guard(world), call(secret="SK-wrong")) == "signature_mismatch"
    world.keys.pop("AK-alice")
    assert code_of(guard(world), call()) == "signature_mismatch"


def test_a_key_whose_user_is_gone(world: World) -> None:
    error = refused(guard(world), call(user="ghost"))
    assert error.code == "authentication_failed"
    assert error.context.principal is None


def test_the_injected_clock_bounds_the_signature_date(world: World) -> None:
    world.clock.now = T0 + 901
    assert code_of(guard(world), call()) == "date_out_of_window"
    guard(world).check(call(at=T0 + 901))


# -- 4. workspace ---------------------------------------------------------------------------------------------


LONE_SURROGATE = '{{"note": "\ud800", "{field}": "{value}"}}'  # a JSON text with an unpaired surrogate


def body_of(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    "where",
    [
        {"query": f"workspace_id={WS_PUBLIC}"},
        {"query": f"workspaceId={WS_PUBLIC}"},
        {"query": f"limit=10&workspace_id={WS_PUBLIC}&offset=0"},
        {"headers": {"X-Workspace-Id": WS_PUBLIC}},
        {"headers": {"X-Workspace-Id": f" {WS_PUBLIC} "}},
        {"method": "POST", "body": body_of(name="nb", workspace_id=WS_PUBLIC)},
        {"method": "POST", "body": b'  \r\n {"workspace_id": "' + WS_PUBLIC.encode() + b'"}'},
        {"query": f"workspace_id={WS_PUBLIC}", "headers": {"X-Workspace-Id": WS_PUBLIC}},
        {"query": f"workspace_id={WS_PUBLIC}&workspaceId={WS_PUBLIC}&workspace_id={WS_PUBLIC}"},
        {"method": "POST", "query": f"workspace_id={WS_PUBLIC}", "body": body_of(workspace_id=WS_PUBLIC)},
    ],
    ids=[
        "query",
        "workspaceId",
        "among-others",
        "header",
        "header-spaces",
        "body",
        "body-space",
        "query+header",
        "repeated",
        "query+body",
    ],
)
def test_the_workspace_named_by_the_request(world: World, where: dict[str, Any]) -> None:
    method = where.pop("method", "GET")
    context = guard(world).check(call(method, **where))
    assert context.workspace_id == WS_PUBLIC
    assert context.workspace is not None and context.workspace.name == "shared"
    assert context.policy_context["modelarts:workspaceid"] == WS_PUBLIC


def test_no_workspace_means_the_default_one(world: World) -> None:
    context = guard(world).check(call("POST", body=body_of(name="nb")))
    assert context.workspace_id == "0"
    assert ("workspace", "0") in world.lookups


@pytest.mark.parametrize(
    "where",
    [
        {"query": f"workspace_id={WS_PUBLIC}", "headers": {"X-Workspace-Id": "0"}},
        {"query": f"workspace_id={WS_PUBLIC}&workspaceId=0"},
        {"query": f"workspace_id={WS_PUBLIC}&workspace_id=0"},
        {"query": f"workspace_id={WS_PUBLIC}", "body": body_of(workspace_id="0")},
        {"headers": {"X-Workspace-Id": WS_PUBLIC}, "body": body_of(workspace_id="0")},
    ],
    ids=["query-header", "two-keys", "repeated-key", "query-body", "header-body"],
)
def test_two_different_workspaces_conflict(world: World, where: dict[str, Any]) -> None:
    assert code_of(guard(world), call("POST", **where)) == "conflicting_workspace"


def test_a_repeated_json_key_is_refused(world: World) -> None:
    body = b'{"workspace_id": "0", "workspace_id": "' + WS_PRIVATE.encode() + b'"}'
    assert code_of(guard(world), call("POST", body=body, user="frank")) == "malformed_body"


@pytest.mark.parametrize(
    "body",
    [
        b'{"workspace\\u005fid": "' + WS_PRIVATE.encode() + b'"}',
        b'{"\\u0077orkspace_id": "' + WS_PRIVATE.encode() + b'"}',
        b'{"workspace_id": "\\u0032' + WS_PRIVATE[1:].encode() + b'"}',
    ],
    ids=["key-underscore", "key-first-letter", "value"],
)
def test_unicode_escapes_are_read(world: World, body: bytes) -> None:
    assert code_of(guard(world), call("POST", body=body, user="frank")) == "workspace_denied"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"workspace_id": "' + WS_PUBLIC.encode() + b'",', "malformed_body"),
        (b'{"name": "nb", "workspace_id" ', "malformed_body"),
        (b'{"name": "\\u00e9', "malformed_body"),  # a \u escape could spell the field
        (b'{"name": "nb",', None),  # invalid, but cannot name a workspace: the app answers it
        (b"{not json at all", None),
        # An array and a nested field name the workspace too (they used to be ignored: admitted in "0").
        (b'[{"workspace_id": "' + WS_PRIVATE.encode() + b'"}]', "workspace_denied"),
        (b'"workspace_id"', "malformed_body"),  # could name one, not an object or array: lenient readers
        (b'{"meta": {"workspace_id": "' + WS_PRIVATE.encode() + b'"}}', "workspace_denied"),
        (b"workspace_id=" + WS_PRIVATE.encode(), "malformed_body"),  # not JSON, and no form content type
    ],
    ids=["truncated", "no-value", "escape", "invalid-unrelated", "garbage", "array", "string", "nested", "form"],
)
def test_json_bodies(world: World, body: bytes, code: str | None) -> None:
    request = call("POST", body=body, user="frank")
    if code is None:
        assert guard(world).check(request).workspace_id == "0"
    else:
        assert code_of(guard(world), request) == code


@pytest.mark.parametrize(
    "where",
    [
        {"query": f"workspace_id={WS_PUBLIC.upper().replace('1', 'A')}"},
        {"query": "workspace_id=" + "a" * 31},
        {"query": "workspace_id=" + "a" * 33},
        {"query": "workspace_id=" + "g" * 32},
        {"query": "workspace_id=default"},
        {"query": "workspace_id="},
        {"query": "workspace_id=00"},
        {"query": "workspace_id=%200"},
        {"query": "workspace_id=0%00"},
        {"query": "workspace_id=" + "a" * 4000},
        {"headers": {"X-Workspace-Id": "default"}},
        {"body": b'{"workspace_id": 0}'},
        {"body": b'{"workspace_id": null}'},
        {"body": b'{"workspace_id": ["0"]}'},
        {"body": b'{"workspace_id": {"id": "0"}}'},
        {"body": b'{"workspace_id": true}'},
    ],
    ids=repr,
)
def test_invalid_workspace_ids(world: World, where: dict[str, Any]) -> None:
    assert code_of(guard(world), call("POST", **where)) == "invalid_workspace_id"
    assert not any(kind == "workspace" for kind, _id in world.lookups)  # refused before the store is asked


@pytest.mark.parametrize("workspace", [WS_UNKNOWN, WS_FOREIGN], ids=["unknown", "foreign"])
def test_unknown_and_foreign_workspaces_are_not_found(world: World, workspace: str) -> None:
    error = refused(guard(world), call(query=f"workspace_id={workspace}"))
    assert error.code == "workspace_not_found"
    assert error.status == 403
    assert error.message == "workspace not found"  # the same answer: which workspaces exist does not leak
    assert error.context.workspace is None


@pytest.mark.parametrize(
    ("workspace", "user", "allowed"),
    [
        ("0", "frank", True),
        ("0", "carol", True),  # the default workspace belongs to every domain
        (WS_PUBLIC, "frank", True),
        (WS_PUBLIC, "dave", True),
        (WS_PRIVATE, "alice", True),  # owner
        (WS_PRIVATE, "root", True),  # domain administrator
        (WS_PRIVATE, "frank", False),
        (WS_PRIVATE, "erin", False),
        (WS_PRIVATE, "bob", False),
        (WS_INTERNAL, "alice", True),  # owner
        (WS_INTERNAL, "root", True),  # administrator
        (WS_INTERNAL, "erin", True),  # granted user
        (WS_INTERNAL, "bob", True),  # member of a granted group
        (WS_INTERNAL, "frank", False),
    ],
)
def test_workspace_access(world: World, workspace: str, user: str, allowed: bool) -> None:
    world.rules("dave", allow("modelarts:notebook:list"))
    path = f"/v1/{P2 if user == 'carol' else P1}/notebooks"
    request = call(path=path, query=f"workspace_id={workspace}", user=user)
    if allowed:
        assert guard(world).check(request).workspace_id == workspace
    else:
        error = refused(guard(world), request)
        assert error.code == "workspace_denied"
        assert error.context.principal.user_name == user


def test_a_default_workspace_that_is_not_public(world: World) -> None:
    world.workspaces["0"] = Workspace("0", "default", None, AuthType.PRIVATE)
    assert code_of(guard(world), call(user="root")) == "workspace_denied"


def test_a_missing_default_workspace(world: World) -> None:
    del world.workspaces["0"]
    assert code_of(guard(world), call()) == "workspace_not_found"


def test_workspace_access_is_needed_in_addition_to_the_action(world: World) -> None:
    world.rules("frank", allow("modelarts:*:*"))
    assert code_of(guard(world), call(user="frank", headers={"X-Workspace-Id": WS_PRIVATE})) == "workspace_denied"
    world.rules("alice", allow("modelarts:image:*"))
    assert code_of(guard(world), call(headers={"X-Workspace-Id": WS_PRIVATE})) == "action_denied"


@pytest.mark.parametrize(
    ("key", "sent"),
    [("workspace_id", "w%6Frkspace_id"), ("workspace_id", "workspace%5Fid"), ("workspaceId", "%77orkspaceId")],
    ids=lambda key: key,
)
def test_a_percent_encoded_query_key_still_names_the_workspace(world: World, key: str, sent: str) -> None:
    # The app decodes query keys (Starlette, Werkzeug and Django all do): the guard must read the same key.
    # Huawei's canonical query decodes keys too, so the respelled query still verifies.
    request = call(query=f"{key}={WS_PRIVATE}", sent_query=f"{sent}={WS_PRIVATE}", user="frank")
    assert code_of(guard(world), request) == "workspace_denied"


@pytest.mark.parametrize(
    "encoded",
    [
        b"\xef\xbb\xbf" + body_of(workspace_id=WS_PRIVATE),
        json.dumps({"workspace_id": WS_PRIVATE}).encode("utf-16-le"),
        json.dumps({"workspace_id": WS_PRIVATE}).encode("utf-16"),
        json.dumps({"workspace_id": WS_PRIVATE}).encode("utf-32"),
        # json.loads(bytes) decodes with "surrogatepass": a lone surrogate does not stop the app reading the body
        LONE_SURROGATE.format(field="workspace_id", value=WS_PRIVATE).encode("utf-16-le", "surrogatepass"),
        LONE_SURROGATE.format(field="workspace_id", value=WS_PRIVATE).encode("utf-32", "surrogatepass"),
        b"\xef\xbb\xbf"
        + LONE_SURROGATE.format(field="workspace_id", value=WS_PRIVATE).encode("utf-8", "surrogatepass"),
        LONE_SURROGATE.format(field="workspace_id", value=WS_PRIVATE).encode("utf-8", "surrogatepass"),
    ],
    ids=[
        "utf-8-bom",
        "utf-16-le",
        "utf-16-bom",
        "utf-32-bom",
        "utf-16-le-surrogate",
        "utf-32-surrogate",
        "utf-8-bom-surrogate",
        "utf-8-surrogate",
    ],
)
def test_a_json_body_in_any_encoding_python_reads_names_the_workspace(world: World, encoded: bytes) -> None:
    # json.loads(bytes), which Starlette's request.json() and Flask's get_json() call, accepts a UTF-8 BOM
    # and detects UTF-16/32: the app would act in WS_PRIVATE while the guard checked the default workspace.
    assert json.loads(encoded)["workspace_id"] == WS_PRIVATE
    assert code_of(guard(world), call("POST", body=encoded, user="frank")) in {"workspace_denied", "malformed_body"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/v1/{P1}/workspaces/{WS_PRIVATE}"),
        ("PUT", f"/v1/{P1}/workspaces/{WS_PRIVATE}"),
        ("DELETE", f"/v1/{P1}/workspaces/{WS_PRIVATE}"),
        ("GET", f"/v1/{P1}/workspaces/{WS_PRIVATE}/quotas"),
        ("PUT", f"/v1/{P1}/workspaces/{WS_PRIVATE}/quotas"),
    ],
)
def test_a_workspace_named_in_the_path_is_the_request_workspace(world: World, method: str, path: str) -> None:
    # DELETE /v1/{project_id}/workspaces/{ws_id} acts on that workspace: checking the default one instead
    # lets a user who may not enter a PRIVATE workspace manage it, and dodges modelarts:workspaceId conditions.
    assert code_of(guard(world), call(method, path, user="frank")) == "workspace_denied"
    context = guard(world).check(call(method, path, user="alice"))
    assert context.workspace_id == WS_PRIVATE
    assert context.policy_context["modelarts:workspaceid"] == WS_PRIVATE
    assert code_of(guard(world), call(method, path, query=f"workspace_id={WS_PUBLIC}")) == "conflicting_workspace"


def test_a_workspace_header_must_be_signed(world: World) -> None:
    # The header steers authorization like the query and the path do, but only those are signed: anyone holding
    # a presigned URL (made to be shared) or a captured request could otherwise re-aim it at another workspace
    # of the signer. The verifier already refuses an unsigned X-Security-Token the same way.
    signed = call(user="bob", headers={"X-Workspace-Id": WS_PUBLIC})
    assert guard(world).check(signed).workspace_id == WS_PUBLIC
    added = call(user="bob", unsigned={"X-Workspace-Id": WS_PUBLIC})
    assert code_of(guard(world), added) == "header_not_signed"
    url = urlsplit(
        presign_url(
            "GET", HOST + NOTEBOOKS, access_key="AK-bob", secret_key="SK-bob-secret", region="r", service="s", at=T0
        )
    )
    presigned = Request.build(
        "GET", f"{url.path}?{url.query}", {"Host": url.netloc, "X-Workspace-Id": WS_PUBLIC}, b"", CLIENT
    )
    assert code_of(guard(world), presigned) == "header_not_signed"


# -- project --------------------------------------------------------------------------------------------------


def test_the_project_from_the_path(world: World) -> None:
    context = guard(world).check(call())
    assert context.project == world.projects[P1]
    assert context.policy_context["g:projectname"] == "cn-north-4"


def test_the_project_from_the_header(world: World) -> None:
    assert guard(world).check(call(headers={"X-Project-Id": P1})).project == world.projects[P1]
    world.rules("alice", allow("svc:*:*"))
    context = guard(world, routes=PUBLIC_ROUTES).check(call(path="/things", headers={"X-Project-Id": P1}))
    assert context.project == world.projects[P1]
    assert context.policy_context["g:projectname"] == "cn-north-4"


def test_no_project(world: World) -> None:
    world.rules("alice", allow("svc:*:*"))
    context = guard(world, routes=PUBLIC_ROUTES).check(call(path="/things"))
    assert context.project is None
    assert "g:projectname" not in context.policy_context


@pytest.mark.parametrize(
    ("path", "headers", "code"),
    [
        (NOTEBOOKS, {"X-Project-Id": P2}, "conflicting_project"),
        (NOTEBOOKS, {"X-Project-Id": ""}, "conflicting_project"),
        (f"/v1/{P2}/notebooks", {}, "project_not_found"),  # another domain's project
        (f"/v1/{'c' * 32}/notebooks", {}, "project_not_found"),
        (f"/v1/{'c' * 65}/notebooks", {}, "project_not_found"),
        ("/v1/%20/notebooks", {}, "project_not_found"),
        (f"/v1/{P1}/notebooks", {"X-Project-Id": P1}, None),
    ],
    ids=["conflict", "empty-header", "foreign", "unknown", "too-long", "blank", "same-twice"],
)
def test_project_problems(world: World, path: str, headers: dict[str, str], code: str | None) -> None:
    request = call(path=path, headers=headers)
    if code is None:
        guard(world).check(request)
    else:
        assert code_of(guard(world), request) == code


def test_a_header_only_project_must_exist(world: World) -> None:
    world.rules("alice", allow("svc:*:*"))
    checker = guard(world, routes=PUBLIC_ROUTES)
    assert code_of(checker, call(path="/things", headers={"X-Project-Id": P2})) == "project_not_found"
    assert code_of(checker, call(path="/things", headers={"X-Project-Id": "nope"})) == "project_not_found"


def test_an_overlong_project_id_is_not_looked_up(world: World) -> None:
    assert code_of(guard(world), call(headers={"X-Project-Id": "c" * 65}, path="/v1/" + "c" * 65 + "/notebooks")) == (
        "project_not_found"
    )
    assert not any(kind == "project" for kind, _id in world.lookups)


# -- 5. IP whitelists -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "name"),
    [
        (WhitelistScope.USER, "u-alice"),
        (WhitelistScope.WORKSPACE, "0"),
        (WhitelistScope.ROUTE, "modelarts:notebook:list"),
        (WhitelistScope.ROUTE, "GET /v1/{project_id}/notebooks"),
    ],
    ids=["user", "workspace", "route-action", "route-name"],
)
def test_whitelists(world: World, scope: WhitelistScope, name: str) -> None:
    world.allow_only(scope, name, "192.0.2.0/24", "2001:db8::/32")
    checker = guard(world)
    error = refused(checker, call())
    assert error.code == "address_not_allowed"
    assert error.context.client == CLIENT
    for second, client in enumerate(("192.0.2.7", "2001:db8::7", "::ffff:192.0.2.8"), 1):
        checker.check(call(client=client, at=T0 + second))  # re-signed: the same signature is a replay
    if scope is WhitelistScope.ROUTE:  # another route (and action) is not covered by a route whitelist
        checker.check(call("POST"))
    else:  # the same user or workspace is, on every route
        assert code_of(checker, call("POST")) == "address_not_allowed"


def test_whitelists_of_other_names_do_not_apply(world: World) -> None:
    world.allow_only(WhitelistScope.USER, "u-bob", "192.0.2.0/24")
    world.allow_only(WhitelistScope.WORKSPACE, WS_PUBLIC, "192.0.2.0/24")
    world.allow_only(WhitelistScope.ROUTE, "POST /v1/{project_id}/notebooks", "192.0.2.0/24")
    world.allow_only(WhitelistScope.ROUTE, "modelarts:notebook:create", "192.0.2.0/24")
    guard(world).check(call())
    assert code_of(guard(world), call(query=f"workspace_id={WS_PUBLIC}")) == "address_not_allowed"


def test_an_empty_whitelist_allows_everyone(world: World) -> None:
    world.whitelists[(WhitelistScope.USER, "u-alice")] = IpWhitelist()
    guard(world).check(call(client=None))


def test_no_client_address_passes_no_whitelist(world: World) -> None:
    guard(world).check(call(client="not-an-ip"))  # no whitelist: fine
    world.allow_only(WhitelistScope.USER, "u-alice", "0.0.0.0/0", "::/0")
    assert code_of(guard(world), call(client="not-an-ip")) == "address_not_allowed"
    assert code_of(guard(world), call(client=None)) == "address_not_allowed"


def test_a_route_whitelist_guards_a_public_route(world: World) -> None:
    world.allow_only(WhitelistScope.ROUTE, "GET /healthz", "192.0.2.0/24")
    checker = guard(world, routes=PUBLIC_ROUTES)
    assert code_of(checker, call(path="/healthz", user=None)) == "address_not_allowed"
    checker.check(call(path="/healthz", user=None, client="192.0.2.1"))


def test_a_route_whitelist_on_a_body_action(world: World) -> None:
    # `authmw whitelist set --route modelarts:service:action ...` must restrict starting and stopping services.
    world.allow_only(WhitelistScope.ROUTE, "modelarts:service:action", "192.0.2.0/24")
    checker = guard(world)
    assert checker.check(call("PUT", SERVICE, body=body_of(description="x"))).action == "modelarts:service:update"
    assert code_of(checker, call("PUT", SERVICE, body=body_of(status="running"))) == "address_not_allowed"
    checker.check(call("PUT", SERVICE, body=body_of(status="running"), client="192.0.2.9", at=T0 + 1))


# -- 6. the policy context ------------------------------------------------------------------------------------


def test_the_policy_context(world: World) -> None:
    context = guard(world).check(call(query=f"workspace_id={WS_PUBLIC}"))
    expected = {
        "g:sourceip": CLIENT,
        "g:currenttime": T0_TEXT,
        "g:userid": "u-alice",
        "g:username": "alice",
        "g:domainid": MAIN,
        "g:domainname": "main",
        "g:projectid": P1,
        "g:projectname": "cn-north-4",
        "g:mfapresent": False,
        "modelarts:workspaceid": WS_PUBLIC,
    }
    assert {key: context.policy_context.get(key) for key in expected} == expected
    assert all(key == key.lower() for key in context.policy_context)  # the engine's fast path


def test_domain_and_project_ids_reach_the_policies(world: World) -> None:
    world.rules(
        "alice", allow("modelarts:*:*"), deny("modelarts:*:*", Condition={"StringEquals": {"g:ProjectId": [P1]}})
    )
    assert code_of(guard(world), call()) == "action_denied"
    world.rules(
        "alice", allow("modelarts:*:*"), deny("modelarts:*:*", Condition={"StringEquals": {"g:DomainId": [MAIN]}})
    )
    assert code_of(guard(world), call()) == "action_denied"


def test_an_unsigned_body_may_not_name_the_workspace(world: World) -> None:
    job = body_of(workspace_id=WS_PUBLIC)
    signed = sign_request(
        "POST", HOST + f"/v2/{P1}/training-jobs", {"Content-Type": "application/json"}, job,
        access_key="AK-alice", secret_key="SK-alice-secret", at=T0, unsigned_payload=True,
    )  # fmt: skip
    request = Request.build("POST", urlsplit(signed.url).path, signed.headers, job, CLIENT)
    assert code_of(guard(world), request) == "unsigned_payload_refused"
    plain = body_of(name="job")  # an unsigned body that names nothing is fine
    signed = sign_request(
        "POST", HOST + f"/v2/{P1}/training-jobs", {"Content-Type": "application/json"}, plain,
        access_key="AK-alice", secret_key="SK-alice-secret", at=T0, unsigned_payload=True,
    )  # fmt: skip
    request = Request.build("POST", urlsplit(signed.url).path, signed.headers, plain, CLIENT)
    assert guard(world).check(request).action == "modelarts:trainJob:create"


def test_an_unknown_client_address_is_absent_from_the_context(world: World) -> None:
    # With no address (an unparsable peer or forwarded hop), g:SourceIp must be absent rather than "", so that
    # a "deny when the address is unknown" statement (Null g:SourceIp true) applies.
    world.rules("alice", allow("modelarts:*:*"), deny("modelarts:*:*", Condition={"Null": {"g:SourceIp": ["true"]}}))
    guard(world).check(call())
    error = refused(guard(world), call(client="not-an-ip"))
    assert error.code == "action_denied"
    assert "g:sourceip" not in error.context.policy_context


@pytest.mark.parametrize(
    ("condition", "request_options", "allowed"),
    [
        ({"IpAddress": {"g:SourceIp": ["203.0.113.0/24"]}}, {}, True),
        ({"IpAddress": {"g:SourceIp": ["203.0.113.0/24"]}}, {"client": "198.51.100.1"}, False),
        ({"NotIpAddress": {"g:SourceIp": ["203.0.113.0/24"]}}, {"client": "2001:db8::1"}, True),
        ({"DateGreaterThan": {"g:CurrentTime": ["2024-05-01T12:34:00Z"]}}, {}, True),
        ({"DateLessThan": {"g:CurrentTime": ["2024-05-01T12:34:00Z"]}}, {}, False),
        ({"StringEquals": {"g:UserId": ["u-alice"]}}, {}, True),
        ({"StringEquals": {"g:UserId": ["u-alice"]}}, {"user": "bob"}, False),
        ({"StringEquals": {"g:UserName": ["alice"]}}, {}, True),
        ({"StringEquals": {"g:UserName": ["alice"]}}, {"user": "frank"}, False),
        ({"StringEquals": {"g:DomainName": ["main"]}}, {}, True),
        ({"StringEquals": {"g:DomainName": ["other"]}}, {}, False),
        ({"StringEquals": {"g:ProjectName": ["cn-north-4"]}}, {}, True),
        ({"StringEquals": {"g:ProjectName": ["eu-west-0"]}}, {}, False),
        ({"Null": {"g:ProjectName": ["false"]}}, {}, True),
        ({"Bool": {"g:MFAPresent": ["false"]}}, {}, True),
        ({"Bool": {"g:MFAPresent": ["true"]}}, {}, False),
        ({"StringEquals": {"modelarts:workspaceId": [WS_PUBLIC]}}, {"query": f"workspace_id={WS_PUBLIC}"}, True),
        ({"StringEquals": {"modelarts:workspaceId": [WS_PUBLIC]}}, {}, False),
        ({"StringEquals": {"modelarts:workspaceId": ["0"]}}, {}, True),
    ],
    ids=lambda value: repr(value) if not isinstance(value, bool) else str(value),
)
def test_condition_keys_reach_the_policy(
    world: World, condition: dict[str, Any], request_options: dict[str, Any], allowed: bool
) -> None:
    for user in ("alice", "bob", "frank"):
        world.rules(user, allow("modelarts:notebook:list", Condition=condition))
    request = call(**request_options)
    if allowed:
        assert guard(world).check(request).decision.allowed  # type: ignore[union-attr]
    else:
        error = refused(guard(world), request)
        assert error.code == "action_denied"
        assert error.context.decision is not None and not error.context.decision.explicit


def test_the_project_name_is_absent_without_a_project(world: World) -> None:
    world.rules("alice", allow("svc:thing:list", Condition={"Null": {"g:ProjectName": ["true"]}}))
    checker = guard(world, routes=PUBLIC_ROUTES)
    checker.check(call(path="/things"))
    assert code_of(checker, call(path="/things", headers={"X-Project-Id": P1})) == "action_denied"


def test_current_time_follows_the_injected_clock(world: World) -> None:
    world.rules(
        "alice",
        allow("modelarts:notebook:list", Condition={"DateLessThan": {"g:CurrentTime": ["2024-05-01T13:00:00Z"]}}),
    )
    checker = guard(world)
    assert checker.check(call()).policy_context["g:currenttime"] == T0_TEXT
    world.clock.now = T0 + 0.999  # the same second
    assert checker.check(call(at=T0 - 1)).policy_context["g:currenttime"] == T0_TEXT
    world.clock.now = T0 + 3600
    error = refused(checker, call(at=T0 + 3600))
    assert error.code == "action_denied"
    assert error.context.policy_context["g:currenttime"] == "2024-05-01T13:34:56Z"


def test_an_explicit_deny_wins(world: World) -> None:
    world.rules(
        "alice",
        allow("modelarts:*:*"),
        deny("modelarts:notebook:list", Condition={"IpAddress": {"g:SourceIp": [CLIENT]}}),
    )
    error = refused(guard(world), call())
    assert error.code == "action_denied"
    assert error.context.decision.explicit
    assert (error.context.decision.policy, error.context.decision.statement) == ("p", 1)
    guard(world).check(call(client="192.0.2.1"))


# -- body actions ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "action"),
    [
        (body_of(status="running"), "modelarts:service:action"),
        (body_of(status="stopped", description="x"), "modelarts:service:action"),
        (b'{"st\\u0061tus": "running"}', "modelarts:service:action"),
        (body_of(description="x"), "modelarts:service:update"),
        (body_of(config={"status": "running"}), "modelarts:service:update"),  # not top-level
        (b"", "modelarts:service:update"),
        (b'["status"]', "modelarts:service:update"),
        (b"status=running", None),  # not JSON, no form content type: refused (test_guard_bodies.py)
    ],
    ids=["status", "status-and-more", "escaped", "no-status", "nested", "empty", "array", "form"],
)
def test_a_body_field_picks_the_action(world: World, body: bytes, action: str | None) -> None:
    if action is None:
        assert code_of(guard(world), call("PUT", SERVICE, body=body)) == "malformed_body"
        return
    context = guard(world).check(call("PUT", SERVICE, body=body))
    assert context.action == action
    assert context.route is not None and context.route.action == "modelarts:service:update"


def test_the_body_action_is_what_is_authorized(world: World) -> None:
    world.rules("alice", allow("modelarts:service:update"))
    checker = guard(world)
    checker.check(call("PUT", SERVICE, body=body_of(description="x")))
    error = refused(checker, call("PUT", SERVICE, body=body_of(status="stopped")))
    assert error.code == "action_denied"
    assert error.context.action == "modelarts:service:action"


def test_an_unreadable_body_that_names_a_body_field(world: World) -> None:
    assert code_of(guard(world), call("PUT", SERVICE, body=b'{"status": "running",')) == "malformed_body"
    assert code_of(guard(world), call("PUT", SERVICE, body=b'{"status": 1, "status": 2}')) == "malformed_body"


@pytest.mark.parametrize(
    "encoded",
    [
        b"\xef\xbb\xbf" + body_of(status="running"),
        json.dumps({"status": "running"}).encode("utf-16-le"),
        json.dumps({"status": "running"}).encode("utf-16"),
        LONE_SURROGATE.format(field="status", value="running").encode("utf-16-le", "surrogatepass"),
    ],
    ids=["utf-8-bom", "utf-16-le", "utf-16-bom", "utf-16-le-surrogate"],
)
def test_a_body_field_in_any_encoding_python_reads(world: World, encoded: bytes) -> None:
    world.rules("alice", allow("modelarts:service:update"))
    assert code_of(guard(world), call("PUT", SERVICE, body=encoded)) in {"action_denied", "malformed_body"}


# -- the legacy default ----------------------------------------------------------------------------------------


def test_no_policy_means_no_access_by_default(world: World) -> None:
    error = refused(guard(world), call(user="dave"))
    assert error.code == "action_denied"
    assert not error.context.decision.explicit


def test_default_allow_without_policies(world: World) -> None:
    checker = guard(world, default_allow_without_policies=True)
    context = checker.check(call(user="dave"))
    assert context.decision is not None and context.decision.allowed
    assert (context.decision.policy, context.decision.statement) == (None, None)
    assert "legacy" in context.decision.reason
    # only without any policy: a policy that does not allow still denies
    world.rules("frank", allow("modelarts:image:list"))
    assert code_of(checker, call(user="frank")) == "action_denied"
    # and only for ModelArts actions
    custom = guard(world, routes=PUBLIC_ROUTES, default_allow_without_policies=True)
    assert code_of(custom, call(path="/things", user="dave")) == "action_denied"


def test_allowed_actions_follow_the_legacy_default(world: World) -> None:
    # The request passes because of the legacy rule: allowed_actions must say so, not list nothing.
    checker = guard(world, default_allow_without_policies=True)
    context = checker.check(call(user="dave"))
    assert context.allowed_actions == checker.actions  # the preset's routes and the whole ModelArts catalog


# -- dry-run and the error context ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"path": "/v1/p/unknown", "user": None}, "route_not_allowed"),
        ({"user": None}, "missing_credentials"),
        ({"path": f"{NOTEBOOKS}/a%2Fb"}, "ambiguous_path"),
        ({"query": f"workspace_id={WS_PRIVATE}", "user": "frank"}, "workspace_denied"),
        ({"user": "dave"}, "action_denied"),
    ],
)
def test_dry_run_tags_and_passes(world: World, options: dict[str, Any], code: str) -> None:
    context = guard(world, mode="dry-run").check(call(**options))
    assert context.error is not None
    assert context.error.code == code
    assert context.request_id == "req-1"


def test_dry_run_keeps_what_was_established(world: World) -> None:
    context = guard(world, mode="dry-run").check(call(user="dave"))
    assert context.principal is not None and context.principal.user_name == "dave"
    assert context.workspace_id == "0"
    assert context.decision is not None and not context.decision.allowed
    assert context.action == "modelarts:notebook:list"
    ok = guard(world, mode="dry-run").check(call())
    assert ok.error is None and ok.decision is not None and ok.decision.allowed


def test_errors_carry_the_partial_context(world: World) -> None:
    error = refused(guard(world), call(query=f"workspace_id={WS_PRIVATE}", user="frank"))
    context = error.context
    assert isinstance(context, AuthContext)
    assert (context.request_id, context.client, context.error) == ("req-1", CLIENT, None)
    assert context.route is not None and context.route.template == "/v1/{project_id}/notebooks"
    assert context.action == "modelarts:notebook:list"
    assert context.principal is not None and context.principal.user_id == "u-frank"
    assert context.credential is not None and context.credential.access_key == "AK-frank"
    assert (context.workspace, context.decision) == (None, None)

    denied = refused(guard(world), call(user="dave")).context
    assert denied.workspace_id == "0"
    assert denied.project is not None and denied.project.id == P1
    assert denied.policy_context["g:username"] == "dave"
    assert denied.decision is not None and not denied.decision.allowed


# -- allowed_actions and authorize -------------------------------------------------------------------------------


def test_allowed_actions(world: World) -> None:
    world.rules("alice", allow("modelarts:notebook:*"), deny("modelarts:notebook:delete"))
    checker = guard(world)
    context = checker.check(call())
    expected = tuple(a for a in actions_of(checker.routes, "modelarts:notebook:") if a != "modelarts:notebook:delete")
    assert context.allowed_actions == expected
    assert "modelarts:notebook:list" in expected and "modelarts:notebook:create" in expected
    assert context.allowed_actions is context.allowed_actions  # computed once


def test_allowed_actions_include_body_actions(world: World) -> None:
    world.rules("alice", allow("modelarts:service:*"))
    context = guard(world).check(call("GET", SERVICE))
    assert "modelarts:service:action" in context.allowed_actions
    assert "modelarts:service:update" in context.allowed_actions


def test_allowed_actions_are_those_of_the_workspace(world: World) -> None:
    world.rules(
        "bob",
        allow("modelarts:notebook:list"),
        allow("modelarts:*:*", Condition={"StringEquals": {"modelarts:workspaceId": [WS_PUBLIC]}}),
    )
    checker = guard(world)
    assert checker.check(call(user="bob")).allowed_actions == ("modelarts:notebook:list",)
    assert checker.check(call(user="bob", query=f"workspace_id={WS_PUBLIC}")).allowed_actions == checker.actions


def test_allowed_actions_are_memoised_per_principal_and_the_facts_they_read(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.rules(
        "bob",
        allow("modelarts:notebook:list"),
        allow("modelarts:*:*", Condition={"StringEquals": {"modelarts:workspaceId": [WS_PUBLIC]}}),
    )
    checker = guard(world)
    computed: list[str] = []
    original = PolicySet.allowed_actions

    def counting(self: PolicySet, *args: Any, **kwargs: Any) -> list[str]:
        computed.append("x")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PolicySet, "allowed_actions", counting)
    in_public = f"workspace_id={WS_PUBLIC}"
    for nonce in ("1", "2"):  # distinct requests: the replay guard is on
        sent = {"X-Nonce": nonce}
        assert checker.check(call(user="bob", query=in_public, headers=sent)).allowed_actions == checker.actions
        assert checker.check(call(user="bob", headers=sent)).allowed_actions == ("modelarts:notebook:list",)
    assert len(computed) == 2  # once per workspace


def test_memoised_allowed_actions_follow_the_client_address_they_read(world: World) -> None:
    world.rules(
        "bob",
        allow("modelarts:notebook:list"),
        allow("modelarts:*:*", Condition={"IpAddress": {"g:SourceIp": ["192.0.2.0/24"]}}),
    )
    checker = guard(world)
    inside = checker.check(call(user="bob", client="192.0.2.7")).allowed_actions
    outside = checker.check(call(user="bob", client="198.51.100.7", headers={"X-Nonce": "1"})).allowed_actions
    assert inside == checker.actions and outside == ("modelarts:notebook:list",)
    again = checker.check(call(user="bob", client="192.0.2.7", headers={"X-Nonce": "2"})).allowed_actions
    assert again == checker.actions


def test_authorize(world: World) -> None:
    world.rules(
        "bob",
        allow("modelarts:notebook:list"),
        allow("modelarts:trainJob:*", Condition={"StringEquals": {"modelarts:workspaceId": [WS_PUBLIC]}}),
    )
    checker = guard(world)
    in_default = checker.check(call(user="bob"))
    in_shared = checker.check(call(user="bob", query=f"workspace_id={WS_PUBLIC}"))
    decision = checker.authorize(in_shared, "modelarts:trainJob:create")
    assert decision.allowed and decision.statement == 1
    error = authorize_error(checker, in_default, "modelarts:trainJob:create")
    assert error.code == "action_denied"
    assert error.status == 403
    # an action outside the route catalog is decided too
    outside = authorize_error(checker, in_shared, "modelarts:exemlProject:create")
    assert outside.code == "action_denied"


def test_authorize_needs_an_authenticated_context(world: World) -> None:
    checker = guard(world, routes=PUBLIC_ROUTES)
    context = checker.check(call(path="/healthz", user=None))
    error = authorize_error(checker, context, "svc:thing:get")
    assert error.code == "missing_credentials"


def test_authorize_follows_the_legacy_default(world: World) -> None:
    checker = guard(world, default_allow_without_policies=True)
    context = checker.check(call(user="dave"))
    assert checker.authorize(context, "modelarts:exemlProject:create").allowed
    assert authorize_error(checker, context, "obs:bucket:ListBucket").code == ("action_denied")


# -- the workspace wherever the body names it (issue 12, item 2) -----------------------------------------------

TRAINING_JOBS = f"/v2/{P1}/training-jobs"


def job_in(workspace: str, **extra: Any) -> bytes:
    """A v2 training job body as the ModelArts API carries it: the workspace in ``metadata``."""
    return body_of(kind="job", metadata={"name": "j1", "workspace_id": workspace}, **extra)


def test_a_nested_workspace_of_a_training_job_is_checked(world: World) -> None:
    # frank may not enter alice's PRIVATE workspace: naming it in metadata.workspace_id used to be admitted ("0").
    error = refused(guard(world), call("POST", TRAINING_JOBS, body=job_in(WS_PRIVATE), user="frank"))
    assert error.code == "workspace_denied"
    context = guard(world).check(call("POST", TRAINING_JOBS, body=job_in(WS_PUBLIC), user="frank"))
    assert (context.workspace_id, context.action) == (WS_PUBLIC, "modelarts:trainJob:create")


@pytest.mark.parametrize(
    "body",
    [
        job_in(WS_PUBLIC, workspace_id=WS_INTERNAL),  # nested and flat disagree
        body_of(metadata={"workspace_id": WS_PUBLIC}, spec={"workspaceId": WS_INTERNAL}),
        body_of(items=[{"workspace_id": WS_PUBLIC}, {"WORKSPACE-ID": WS_INTERNAL}]),
        body_of(workspace={"id": WS_PUBLIC}, metadata={"workspace_id": WS_INTERNAL}),
        body_of(metadata={"labels": {"os.modelarts/workspace.id": WS_INTERNAL}}, workspace_id=WS_PUBLIC),
        b'{"metadata": {"\\u0077orkspace_id": "'
        + WS_INTERNAL.encode()
        + b'"}, "workspace_id": "'
        + WS_PUBLIC.encode()
        + b'"}',
        '{"metadata": {"work\u017fpace_id": "' + WS_INTERNAL + '"}, "workspace_id": "' + WS_PUBLIC + '"}',
    ],
    ids=["nested-and-flat", "camel-case", "in-an-array", "workspace-object", "pool-label", "escaped", "long-s"],
)
def test_two_workspaces_anywhere_in_the_body_conflict(world: World, body: bytes | str) -> None:
    assert code_of(guard(world), call("POST", TRAINING_JOBS, body=body)) == "conflicting_workspace"


def test_a_nested_workspace_must_agree_with_the_header(world: World) -> None:
    request = call("POST", TRAINING_JOBS, body=job_in(WS_PUBLIC), headers={"X-Workspace-Id": WS_INTERNAL})
    assert code_of(guard(world), request) == "conflicting_workspace"
    request = call("POST", TRAINING_JOBS, body=job_in(WS_PUBLIC), headers={"X-Workspace-Id": WS_PUBLIC})
    assert guard(world).check(request).workspace_id == WS_PUBLIC


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (body_of(metadata={"workspace_id": None}), "invalid_workspace_id"),
        (body_of(metadata={"workspace_id": [WS_PUBLIC]}), "invalid_workspace_id"),
        (body_of(metadata={"workspace_id": "x" * 32}), "invalid_workspace_id"),
        (b'{"metadata": {"workspace_id": "' + WS_PUBLIC.encode() + b'", "workspace_id": "0"}}', "malformed_body"),
        (b'{"metadata": {"workspace_id": "' + WS_PUBLIC.encode() + b'"}', "malformed_body"),
        (json.dumps({"metadata": {"workspace_id": WS_PRIVATE}}).encode("utf-16"), "workspace_denied"),
        (b'{"workspace_id": "0", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "malformed_body"),  # too deep: not a 500
    ],
    ids=["null", "list", "not-an-id", "repeated-nested-key", "truncated", "utf-16", "too-deep"],
)
def test_nested_workspace_values_are_read_strictly(world: World, body: bytes, code: str) -> None:
    assert code_of(guard(world), call("POST", TRAINING_JOBS, body=body, user="frank")) == code


def test_a_declared_workspace_field_is_read(world: World) -> None:
    routes = [Route("POST", "/jobs", "svc:job:create", workspace_fields=("spec.space",))]
    world.rules("alice", allow("svc:*:*"))
    world.rules("frank", allow("svc:*:*"))
    checker = guard(world, routes=routes)
    body = body_of(spec={"space": WS_PRIVATE})  # a name the class defence does not know: declared, so read
    assert code_of(checker, call("POST", "/jobs", body=body, user="frank")) == "workspace_denied"
    assert checker.check(call("POST", "/jobs", body=body_of(spec={"space": WS_PUBLIC}))).workspace_id == WS_PUBLIC
    assert checker.check(call("POST", "/jobs", body=body_of(spec="flat"))).workspace_id == "0"


def test_an_unsigned_body_may_not_name_the_workspace_anywhere(world: World) -> None:
    for job in (job_in(WS_PUBLIC), body_of(items=[{"workspaceId": WS_PUBLIC}])):
        signed = sign_request(
            "POST", HOST + TRAINING_JOBS, {"Content-Type": "application/json"}, job,
            access_key="AK-alice", secret_key="SK-alice-secret", at=T0, unsigned_payload=True,
        )  # fmt: skip
        request = Request.build("POST", urlsplit(signed.url).path, signed.headers, job, CLIENT)
        assert code_of(guard(world), request) == "unsigned_payload_refused"


# -- body actions add to the route's action (item 11) ------------------------------------------------------------


def test_a_body_action_adds_to_the_route_action(world: World) -> None:
    # Allowed to start and stop services, denied updates: a body with a status AND a change used to pass as an
    # action alone (the status field replaced the route's action).
    world.rules("alice", allow("modelarts:service:action", "modelarts:service:get"))
    checker = guard(world)
    error = refused(checker, call("PUT", SERVICE, body=body_of(status="running", config=[{"model_id": "m2"}])))
    assert error.code == "action_denied"
    assert error.context.action == "modelarts:service:update"
    assert error.context.actions == ("modelarts:service:update", "modelarts:service:action")
    world.rules("alice", allow("modelarts:service:action", "modelarts:service:update"))
    context = guard(world).check(call("PUT", SERVICE, body=body_of(status="running")))
    assert context.actions == ("modelarts:service:update", "modelarts:service:action")
    assert context.action == "modelarts:service:action"  # the last one decided
    assert guard(world).check(call("PUT", SERVICE, body=body_of(description="x"))).actions == (
        "modelarts:service:update",
    )


def test_a_body_action_alone_is_not_enough(world: World) -> None:
    world.rules("alice", allow("modelarts:service:update"), deny("modelarts:service:action"))
    error = refused(guard(world), call("PUT", SERVICE, body=body_of(status="stopped")))
    assert (error.code, error.context.action) == ("action_denied", "modelarts:service:action")
    assert error.context.decision is not None and error.context.decision.explicit


# -- typed route parameters and URN escaping (item 14) -----------------------------------------------------------

REPORTS = [Route("GET", "/reports/{rid:int}", "svc:report:get", resource="svc:*:*:report:{rid}")]


@pytest.mark.parametrize("spelling", ["42", "042", "0000000042"])
def test_an_integer_id_is_one_resource_however_spelt(world: World, spelling: str) -> None:
    world.rules("alice", allow("svc:*:*"), deny("svc:report:get", Resource=["svc:*:*:report:42"]))
    error = refused(guard(world, routes=REPORTS), call("GET", f"/reports/{spelling}"))
    assert (error.code, error.context.resource) == ("action_denied", "svc:*:*:report:42")


@pytest.mark.parametrize("spelling", ["4x", "+42", "-1", "4_2", "\u0664\u0662", "9" * 30, "%2042"])
def test_an_integer_id_that_is_not_one_is_refused(world: World, spelling: str) -> None:
    assert code_of(guard(world, routes=REPORTS), call("GET", f"/reports/{spelling}")) == "invalid_path_parameter"


def test_a_parameter_cannot_shift_or_widen_the_urn(world: World) -> None:
    routes = [Route("GET", "/files/{name}", "svc:file:get", resource="svc:*:*:file:{name}")]
    world.rules("alice", allow("svc:*:*"), deny("svc:file:get", Resource=["svc:*:*:file:secret"]))
    checker = guard(world, routes=routes)
    assert checker.check(call("GET", "/files/a%3Ab")).resource == "svc:*:*:file:a%3Ab"
    assert checker.check(call("GET", "/files/%2A")).resource == "svc:*:*:file:%2A"
    assert checker.check(call("GET", "/files/x%3F")).resource == "svc:*:*:file:x%3F"
    assert checker.check(call("GET", "/files/100%25")).resource == "svc:*:*:file:100%25"
    assert code_of(checker, call("GET", "/files/secret")) == "action_denied"


def test_an_aws_chunked_body_is_read_decoded(world: World) -> None:
    payload = job_in(WS_PRIVATE)
    framed = f"{len(payload):x}\r\n".encode() + payload + b"\r\n0\r\n\r\n"
    request = call("POST", TRAINING_JOBS, body=framed, headers={"Content-Encoding": "aws-chunked"}, user="frank")
    assert code_of(guard(world), request) == "workspace_denied"


@pytest.mark.parametrize("key", ["WorkspaceID", "workspace-id", "WORKSPACE_ID", "%57orkspace_id"])
def test_any_spelling_of_the_workspace_query_key_is_read(world: World, key: str) -> None:
    request = call(query=f"{key}={WS_PRIVATE}", user="frank")
    assert code_of(guard(world), request) == "workspace_denied"
