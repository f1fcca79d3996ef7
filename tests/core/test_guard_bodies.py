"""What the guard parses of a body is bounded (max_json_body, a cap on values), strict, and read with the same
key spellings a lenient backend accepts (review of issue 12, findings 1-3)."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from authmw.models import Request
from authmw.settings import Settings
from authmw.signing import sign_request
from tests.support.guard_world import (
    CLIENT,
    HOST,
    SERVICE,
    T0,
    WS_PRIVATE,
    World,
    allow,
    call,
    code_of,
    deny,
    guard,
    refused,
)

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def world() -> World:
    return World()


# -- finding 1: bounded work ------------------------------------------------------------------------------------


def test_a_body_to_parse_larger_than_max_json_body_is_refused(world: World) -> None:
    body = json.dumps({"workspace_id": "0", "pad": "x" * (1 << 20)}).encode()
    assert code_of(guard(world), call("POST", body=body, headers=JSON)) == "json_body_too_large"
    assert guard(world, max_json_body=2 << 20).check(call("POST", body=body, headers=JSON)).workspace_id == "0"


@pytest.mark.parametrize("item", [b"{}", b"[]", b"1"], ids=["objects", "arrays", "numbers"])
def test_a_body_with_too_many_values_is_refused_before_it_is_parsed(world: World, item: bytes) -> None:
    # 12 MiB of [{},{},...] cost 5 s and 650 MB as a tree: the count of , { [ bounds the values without parsing.
    body = b"[" + (item + b",") * 30_000 + b'"workspace"]'
    assert len(body) < 1 << 20
    assert code_of(guard(world), call("POST", body=body, headers=JSON)) == "json_body_too_large"


def test_a_large_body_that_cannot_name_a_workspace_is_not_parsed(world: World) -> None:
    body = b"[" + b"{}," * 500_000 + b"{}]"
    assert guard(world).check(call("POST", body=body, headers=JSON)).workspace_id == "0"


def test_max_json_body_is_a_setting() -> None:
    assert Settings().max_json_body == 1 << 20
    assert Settings.from_mapping({"max_json_body": 4096}).max_json_body == 4096


# -- finding 2: what a lenient backend reads is read too -------------------------------------------------------

PRIVATE_JOB = b'{"kind": "job", "metadata": {"workspace_id": "' + WS_PRIVATE.encode() + b'"}}'


@pytest.mark.parametrize(
    "body",
    [b")]}'\n" + PRIVATE_JOB, b"/*c*/" + PRIVATE_JOB, b"\x0c" + PRIVATE_JOB, b"// x\n" + PRIVATE_JOB],
    ids=["xssi-prefix", "comment", "form-feed", "line-comment"],
)
@pytest.mark.parametrize("media", ["application/json", None, "text/plain"])
def test_a_body_lenient_parsers_read_as_json_is_refused(world: World, body: bytes, media: str | None) -> None:
    # Gson (lenient by default), Jackson ALLOW_COMMENTS and JSON5 read these and act in WS_PRIVATE.
    headers = {} if media is None else {"Content-Type": media}
    assert code_of(guard(world), call("POST", body=body, user="frank", headers=headers)) == "malformed_body"


def test_the_dotless_i_spells_a_workspace_key(world: World) -> None:
    # Java: "workspace_ıd".equalsIgnoreCase("workspace_id") (toUpperCase('ı') == 'I').
    body = '{"metadata": {"workspace_ıd": "' + WS_PRIVATE + '"}}'
    assert code_of(guard(world), call("POST", body=body, user="frank", headers=JSON)) == "workspace_denied"
    assert code_of(guard(world), call(query=f"workspace_%C4%B1d={WS_PRIVATE}", user="frank")) == "workspace_denied"


FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (f"workspace_id={WS_PRIVATE}", "workspace_denied"),
        (f"name=x&metadata.workspaceId={WS_PRIVATE}", "workspace_denied"),
        (f"workspace%5Bid%5D={WS_PRIVATE}", "workspace_denied"),
        (f"workspace_id=0&workspace_id={WS_PRIVATE}", "conflicting_workspace"),
        ("workspace_id=nope", "invalid_workspace_id"),
        ("name=workspace-notes", None),
    ],
    ids=["flat", "nested", "bracket", "conflict", "invalid", "unrelated"],
)
def test_a_form_body_names_the_workspace_as_a_query_does(world: World, body: str, code: str | None) -> None:
    request = call("POST", body=body, user="frank", headers=FORM)
    if code is None:
        assert guard(world).check(request).workspace_id == "0"
    else:
        assert code_of(guard(world), request) == code


@pytest.mark.parametrize(
    ("media", "body"),
    [
        ("application/octet-stream", b"\x00\x01workspace_id=" + WS_PRIVATE.encode()),
        ("image/jpeg", b"\xff\xd8\xff\xe0 workspace " + bytes(range(256))),
        ("application/gzip", b"\x1f\x8b\x08\x00" + b"workspace," * 300_000),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="f"\r\n\r\nworkspace\r\n--x--',
        ),
    ],
    ids=["octet-stream", "jpeg", "gzip-large", "multipart"],
)
def test_a_declared_binary_body_that_mentions_workspace_is_not_read(world: World, media: str, body: bytes) -> None:
    request = call("POST", body=body, user="frank", headers={"Content-Type": media})
    assert guard(world).check(request).workspace_id == "0"


# -- finding 3: body-action fields in any spelling ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'{"Status": "running"}', JSON),
        (b'{"STATUS": "running"}', JSON),
        ('{"ſtatus": "running"}'.encode(), JSON),
        (b"status=running", FORM),
        (b"Status=running", FORM),
    ],
    ids=["Status", "STATUS", "long-s", "form", "form-Status"],
)
def test_a_body_action_field_in_any_case_picks_its_action(world: World, body: bytes, headers: dict[str, str]) -> None:
    world.rules("alice", allow("modelarts:service:update"), deny("modelarts:service:action"))
    error = refused(guard(world), call("PUT", SERVICE, body=body, headers=headers))
    assert (error.code, error.context.action) == ("action_denied", "modelarts:service:action")


def test_an_unsigned_body_may_not_pick_an_action_in_any_case(world: World) -> None:
    body = b'{"Status": "running"}'
    signed = sign_request(
        "PUT", HOST + SERVICE, JSON, body,
        access_key="AK-alice", secret_key="SK-alice-secret", at=T0, unsigned_payload=True,
    )  # fmt: skip
    request = Request.build("PUT", urlsplit(signed.url).path, signed.headers, body, CLIENT)
    assert code_of(guard(world), request) == "unsigned_payload_refused"
