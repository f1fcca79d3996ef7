"""IAM tokens signed with ES256 or RS256 store keys, chosen by ``token_algorithm``; the accepted algorithms come
from ``token_algorithms`` only. Through ``authmw proxy`` over real HTTP."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx
import jwt
import pytest

from authmw.errors import ConfigurationError
from authmw.proxy import build_app
from authmw.settings import Settings
from authmw.store import open_store
from tests.support.forms import SETTINGS, Form, running
from tests.support.world import World

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def keys(world: World) -> dict[str, str]:
    world.store.create_user("algo-user", password=PASSWORD)
    world.store.add_user_to_group("developers", "algo-user")
    return {algorithm: world.store.rotate_signing_key(algorithm)[0] for algorithm in ("ES256", "RS256")}


def login(form: Form) -> str:
    identity = {
        "methods": ["password"],
        "password": {"user": {"name": "algo-user", "password": PASSWORD, "domain": {"name": "default"}}},
    }
    body = {"auth": {"identity": identity, "scope": {"project": {"name": "cn-north-4"}}}}
    answer = httpx.post(form.url + "/v3/auth/tokens", json=body, timeout=30)
    assert answer.status_code == 201, answer.text
    return answer.headers["x-subject-token"]


def notebooks(form: Form, world: World, token: str) -> httpx.Response:
    return httpx.get(f"{form.url}/v1/{world.project}/notebooks", headers={"X-Auth-Token": token}, timeout=30)


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_tokens_are_signed_with_the_configured_algorithm(world: World, keys: dict[str, str], algorithm: str) -> None:
    settings = replace(SETTINGS, token_algorithm=algorithm, token_algorithms=("EdDSA", algorithm))
    with running("proxy", world, settings) as form:
        token = login(form)
        header = jwt.get_unverified_header(token)
        assert (header["alg"], header["kid"]) == (algorithm, keys[algorithm])
        assert notebooks(form, world, token).status_code == 200
        published = {key["kid"]: key for key in httpx.get(form.url + "/.well-known/jwks.json").json()["keys"]}
        assert published[keys[algorithm]]["alg"] == algorithm  # clients can verify it with the JWKS
        verified = jwt.decode(token, jwt.PyJWK(published[keys[algorithm]]).key, algorithms=[algorithm], issuer="authmw")
        assert verified["name"] == "algo-user"
        with running("asgi", world) as default:  # EdDSA only: the token cannot choose its algorithm
            refused = notebooks(default, world, token)
            assert (refused.status_code, refused.json()["error_code"]) == (401, "invalid_token")


def test_an_algorithm_without_a_key_or_not_accepted_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not among token_algorithms"):
        Settings(token_algorithm="ES256")
    with pytest.raises(ConfigurationError, match="token_algorithms"):
        Settings.from_mapping({"token_algorithms": ["HS256"]})
    store = open_store(
        f"sqlite:///{tmp_path / 'authmw.db'}",
        create=True,
        environ={"AUTHMW_MASTER_KEY_FILE": str(tmp_path / "authmw.key")},
    )
    try:
        store.initialize()  # an EdDSA key only
        settings = replace(
            SETTINGS, upstream="http://127.0.0.1:9", token_algorithm="RS256", token_algorithms=("RS256",)
        )
        with pytest.raises(ConfigurationError, match="signing-key rotate --algorithm RS256"):
            build_app(settings, store)
    finally:
        store.close()
