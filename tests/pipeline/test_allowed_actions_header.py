"""``allowed_actions_header``: the sidecar and Envoy's ``authz`` send ``X-Authmw-Allowed-Actions`` by default (SPEC
§3); with ``false`` they send every other identity fact and the assertion, and no allowed actions (not even a
client's own: incoming ``X-Authmw-*`` never pass)."""

from __future__ import annotations

import os
from dataclasses import replace
from urllib.parse import urlsplit

import httpx
import pytest

from authmw.assertion import keys_from_jwks, verify_assertion
from authmw.envoy import CHECK_PREFIX
from authmw.signing import sign_request
from tests.support.forms import SETTINGS, running
from tests.support.world import World


@pytest.mark.parametrize("sent", [True, False], ids=["default", "off"])
@pytest.mark.parametrize("name", ["proxy", "authz"])
def test_the_allowed_actions_header_is_sent_unless_turned_off(world: World, name: str, sent: bool) -> None:
    settings = SETTINGS if sent else replace(SETTINGS, allowed_actions_header=False)
    with running(name, world, settings) as form:
        key = world.scientist
        request = sign_request(
            "GET", f"{form.url}/v1/{world.project}/notebooks", {"X-Nonce": os.urandom(8).hex()},
            access_key=key.access, secret_key=key.secret,
        )  # fmt: skip
        path = urlsplit(request.url).path
        headers = {**request.headers, "X-Authmw-Allowed-Actions": "*"}  # a client's own: never passed on
        # authz answers Envoy with the headers to add; the proxy's upstream echoes the headers that reached it.
        url = form.url + CHECK_PREFIX + path if name == "authz" else request.url
        answer = httpx.get(url, headers=headers)
        assert answer.status_code == 200, answer.text[:300]
        facts = answer.headers if name == "authz" else answer.json()["headers"]
        keys = keys_from_jwks(httpx.get(form.url + "/.well-known/jwks.json").json())
    assert facts["x-authmw-user-name"] == "scientist"
    assert facts["x-authmw-action"] == "modelarts:notebook:list"
    if sent:
        allowed = facts["x-authmw-allowed-actions"].split(",")
        assert "modelarts:notebook:list" in allowed and "*" not in allowed
    else:
        assert "x-authmw-allowed-actions" not in facts
    claims = verify_assertion(facts["x-authmw-assertion"], keys, method="GET", path=path, query="")
    assert claims["user-name"] == "scientist" and "allowed-actions" not in claims
