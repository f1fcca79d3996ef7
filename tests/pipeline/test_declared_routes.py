"""Routes declared with decorators, and ``open_guard`` building the pipeline from a store and a configuration."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from authmw import Request, open_guard
from authmw.errors import ActionDenied, ConfigurationError, MissingCredentials, RouteNotAllowed
from authmw.routes import Routes
from authmw.signing import sign_request
from tests.support.world import Key, World

routes = Routes()


@routes.protect("GET", "/reports/{id}", "modelarts:notebook:get")
def get_report() -> str:
    return "the report"


@routes.public("GET", "/status")
def status() -> str:
    return "ok"


@routes.authenticated("GET", "/me")
def me() -> str:
    return "me"


def signed(key: Key, method: str, path: str) -> Request:
    request = sign_request(method, "http://api.test" + path, {}, b"", access_key=key.access, secret_key=key.secret)
    url = urlsplit(request.url)
    return Request.build(method, url.path, request.headers, b"", client="127.0.0.1")


@pytest.fixture
def environment(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHMW_MASTER_KEY_FILE", world.key_file)
    monkeypatch.delenv("AUTHMW_MASTER_KEY", raising=False)


def test_decorated_routes_replace_the_preset(world: World, environment: None) -> None:
    assert get_report() == "the report"  # the decorators hand the handlers back unchanged
    guard = open_guard(world.url, routes=routes, trusted_proxies=("10.0.0.1",))
    assert guard.check(signed(world.scientist, "GET", "/reports/7")).action == "modelarts:notebook:get"
    with pytest.raises(ActionDenied):
        guard.check(signed(world.outsider, "GET", "/reports/7"))
    assert guard.check(Request.build("GET", "/status", {})).principal is None
    assert guard.check(signed(world.outsider, "GET", "/me")).principal.user_name == "outsider"  # type: ignore[union-attr]
    with pytest.raises(MissingCredentials):
        guard.check(Request.build("GET", "/me", {}))
    with pytest.raises(RouteNotAllowed):  # the modelarts preset is not in force: routes were declared
        guard.check(signed(world.scientist, "GET", f"/v1/{world.project}/notebooks"))


def test_from_config_reads_the_yaml_file(world: World, environment: None, tmp_path: Path) -> None:
    config = tmp_path / "authmw.yaml"
    config.write_text(f"store: {world.url}\nunmatched: authenticate-only\npresets: [modelarts]\n")
    guard = open_guard(config=str(config))
    assert guard.check(signed(world.outsider, "GET", "/anything")).action is None
    assert (
        guard.check(signed(world.scientist, "GET", f"/v1/{world.project}/notebooks")).action
        == "modelarts:notebook:list"
    )
    config.write_text("unmatched: sometimes\n")
    with pytest.raises(ConfigurationError, match="unmatched must be"):
        open_guard(config=str(config))


def test_keyword_settings_override_the_file(world: World, environment: None, tmp_path: Path) -> None:
    config = tmp_path / "authmw.yaml"
    config.write_text(f"store: {world.url}\nunmatched: deny\npresets: [modelarts]\n")
    with pytest.raises(RouteNotAllowed):
        open_guard(config=str(config)).check(signed(world.outsider, "GET", "/anything"))
    guard = open_guard(config=str(config), unmatched="authenticate-only", routes=routes)
    assert guard.check(signed(world.outsider, "GET", "/anything")).action is None
    assert guard.check(signed(world.scientist, "GET", "/reports/7")).action == "modelarts:notebook:get"
    assert guard.check(signed(world.scientist, "GET", f"/v1/{world.project}/notebooks")).action  # the preset stays
    with pytest.raises(ConfigurationError, match="unknown setting"):
        open_guard(config=str(config), unmatch="public")
