"""The client address behind a trusted load balancer, in every form over real HTTP: only the configured
forwarding header is read (``forwarded_header``, default ``x-forwarded-for``), never the one the client chose."""

from __future__ import annotations

import os
from dataclasses import replace

import httpx
import pytest

from authmw.errors import ConfigurationError
from authmw.signing import sign_request
from tests.support.forms import FORMS, SETTINGS, running
from tests.support.world import World

BEHIND_LB = replace(SETTINGS, trusted_proxies=("127.0.0.1",))  # the tests' loopback peer plays the balancer
WALLED_IN = "192.0.2.10"  # inside the walled user's whitelist (192.0.2.0/24)
REAL = "198.51.100.7"  # where the client really is: what the balancer appends to X-Forwarded-For


def walled_get(url: str, world: World, headers: dict[str, str]) -> httpx.Response:
    """A signed call of the walled user (the forwarding headers are not signed: a balancer adds them); a signed
    nonce makes each call a new request for the replay guard."""
    path = f"{url}/v1/{world.project}/notebooks"
    key = world.walled
    nonce = {"X-Nonce": os.urandom(8).hex()}
    signed = sign_request("GET", path, nonce, b"", access_key=key.access, secret_key=key.secret)
    return httpx.get(signed.url, headers={**signed.headers, **headers}, timeout=30)


@pytest.mark.parametrize("name", FORMS)
def test_a_spoofed_forwarded_header_is_ignored_by_default(world: World, name: str) -> None:
    with running(name, world, BEHIND_LB) as form:
        spoofed = walled_get(form.url, world, {"Forwarded": f"for={WALLED_IN}", "X-Forwarded-For": REAL})
        assert (spoofed.status_code, spoofed.json()["error_code"]) == (403, "address_not_allowed")
        alone = walled_get(form.url, world, {"Forwarded": f"for={WALLED_IN}"})  # the balancer itself: 127.0.0.1
        assert (alone.status_code, alone.json()["error_code"]) == (403, "address_not_allowed")
        assert walled_get(form.url, world, {"X-Forwarded-For": WALLED_IN}).status_code == 200


@pytest.mark.parametrize("name", FORMS)
def test_forwarded_header_forwarded_reads_only_forwarded(world: World, name: str) -> None:
    with running(name, world, replace(BEHIND_LB, forwarded_header="forwarded")) as form:
        allowed = walled_get(form.url, world, {"Forwarded": f"for={WALLED_IN}", "X-Forwarded-For": REAL})
        assert allowed.status_code == 200
        spoofed = walled_get(form.url, world, {"Forwarded": f"for={REAL}", "X-Forwarded-For": WALLED_IN})
        assert (spoofed.status_code, spoofed.json()["error_code"]) == (403, "address_not_allowed")


def test_a_bad_forwarded_header_is_refused_at_start(world: World) -> None:
    with (
        pytest.raises(ConfigurationError, match="forwarded_header"),
        running("proxy", world, replace(SETTINGS, forwarded_header="x-real-ip")),
    ):
        pass
