"""Replay protection in every form (issue 12, item 9): a signed request is accepted once, over real HTTP."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from authmw.signing import presign_url, sign_request
from tests.support.forms import SETTINGS, Form, running
from tests.support.world import Key, World

STS = "/v3.0/OS-CREDENTIAL/securitytokens"


def signed(url: str, key: Key, method: str = "GET", path: str = "", body: bytes = b"", **headers: str) -> Any:
    """Signed once by authmw's client signer; sent as often as the test likes."""
    return sign_request(method, url + path, headers, body, access_key=key.access, secret_key=key.secret)


def send(request: Any, **extra: str) -> httpx.Response:
    """``request`` as signed, plus ``extra`` unsigned headers."""
    return httpx.request(request.method, request.url, headers={**request.headers, **extra}, content=request.body)


def code(response: httpx.Response) -> tuple[int, str | None]:
    body = response.json()
    return response.status_code, body.get("error_code") if isinstance(body, dict) else None


def test_the_same_signed_request_is_accepted_once(form: Form, world: World) -> None:
    path = f"/v1/{world.project}/notebooks"
    request = signed(form.url, world.scientist, path=path, **{"X-Nonce": os.urandom(8).hex()})
    assert send(request).status_code == 200
    assert code(send(request)) == (401, "replayed_request")
    # What the signature does not cover does not make it another request: an added or changed unsigned header.
    assert code(send(request, **{"X-Forwarded-For": "192.0.2.1", "User-Agent": "replayer/1.0"})) == (
        401,
        "replayed_request",
    )
    # The client's way out: re-sign with something that differs.
    assert send(signed(form.url, world.scientist, path=path, **{"X-Nonce": os.urandom(8).hex()})).status_code == 200


def test_a_replayed_post_does_not_reach_the_app_twice(form: Form, world: World) -> None:
    body = json.dumps({"kind": "job", "nonce": os.urandom(8).hex()}).encode()
    headers = {"Content-Type": "application/json"}
    request = signed(form.url, world.scientist, "POST", f"/v2/{world.project}/training-jobs", body, **headers)
    assert send(request).status_code == 200
    answer = send(request)
    assert code(answer) == (401, "replayed_request")
    assert "sign each request anew" in answer.json()["error_msg"]


def test_presigned_urls_are_links_reusable_until_they_expire(form: Form, world: World) -> None:
    key = world.scientist
    url = presign_url(
        "GET", f"{form.url}/v1/{world.project}/notebooks?nonce={os.urandom(4).hex()}", access_key=key.access,
        secret_key=key.secret, region="cn-north-4", service="modelarts", expires=300,
    )  # fmt: skip
    assert [httpx.get(url).status_code for _ in range(3)] == [200, 200, 200]


@pytest.fixture(scope="module")
def proxy(world: World) -> Iterator[Form]:
    with running("proxy", world) as started:
        yield started


def test_a_replayed_sts_request_mints_nothing(proxy: Form, world: World) -> None:
    body = json.dumps({"auth": {"identity": {"methods": ["token"]}}, "nonce": os.urandom(4).hex()}).encode()
    headers = {"Content-Type": "application/json"}
    request = signed(proxy.url, world.scientist, "POST", STS, body, **headers)
    first = send(request)
    assert first.status_code == 201, first.text
    assert first.json()["credential"]["access"]
    again = send(request)
    assert code(again) == (401, "replayed_request")
    assert "credential" not in again.json()


@pytest.mark.parametrize("name", ["asgi", "wsgi", "proxy"])
def test_one_user_at_its_quota_does_not_refuse_another(name: str, world: World) -> None:
    settings = replace(SETTINGS, replay_capacity=5, replay_quota=2)
    with running(name, world, settings) as small:
        path = f"/v1/{world.project}/notebooks"

        def fresh(key: Key) -> httpx.Response:
            return send(signed(small.url, key, path=path, **{"X-Nonce": os.urandom(8).hex()}))

        assert [fresh(world.scientist).status_code for _ in range(2)] == [200, 200]
        flood = fresh(world.scientist)
        assert code(flood) == (429, "replay_quota_exceeded")
        assert fresh(world.admin).status_code == 200  # another user goes on
        assert fresh(world.admin).status_code == 200
        # The guard holds 4 of 5: one more, then it is full for everyone (503), the flooder's refusals took nothing.
        assert fresh(world.outsider).status_code in (200, 403)  # the outsider's policy decides, not the guard
        assert code(fresh(world.stranger)) == (503, "replay_cache_full")


def test_replay_protection_can_be_turned_off(world: World) -> None:
    with running("asgi", world, replace(SETTINGS, replay_protection=False)) as unguarded:
        request = signed(unguarded.url, world.scientist, path=f"/v1/{world.project}/notebooks")
        assert [send(request).status_code for _ in range(2)] == [200, 200]
