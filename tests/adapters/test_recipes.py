"""The adapters/ recipes, each served over real HTTP in front of a real store and called by real clients.

Every recipe exposes the same small API: ``GET /whoami`` (any signed caller), ``POST /jobs`` (needs
``modelarts:trainJob:create``) and ``DELETE /jobs/{id}`` (needs ``modelarts:trainJob:delete``, which the
world's developers group is explicitly denied). Django runs in a child process (``manage.py runserver``) so its
global settings never meet other tests; the sidecar recipe runs its upstream and the proxy built from its YAML.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from authmw.client import HttpxAuth
from authmw.proxy import build_app
from authmw.settings import load_settings
from tests.support.servers import free_port, serve_asgi, serve_wsgi
from tests.support.wire import huawei_call
from tests.support.world import Key, World

ADAPTERS = Path(__file__).resolve().parents[2] / "adapters"
RECIPES = ("fastapi", "starlette", "flask", "django", "sidecar")


@pytest.fixture(scope="module")
def environment(world: World) -> Iterator[None]:
    """What the recipes read, as the README says to set it: the store and its master key file."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTHMW_STORE", world.url)
        patch.setenv("AUTHMW_MASTER_KEY_FILE", str(Path(world.url.removeprefix("sqlite:///")).parent / "authmw.key"))
        patch.delenv("AUTHMW_MASTER_KEY", raising=False)
        yield


@contextlib.contextmanager
def recipe_module(path: Path) -> Iterator[ModuleType]:
    """Import a recipe file as its run command would (fresh, under its own name); close its store after."""
    name = f"authmw_recipe_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
        guard = getattr(module, "guard", None)
        if guard is not None:
            guard.identity.store.close()


@contextlib.contextmanager
def django_server(tmp: Path) -> Iterator[str]:
    """``manage.py runserver`` in a child process (the environment carries the store and the master key)."""
    port = free_port()
    log = (tmp / "django.log").open("w")
    env = {**os.environ, "DJANGO_SECRET_KEY": "test-only-" + "x" * 40, "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        str(ADAPTERS / "django_app" / "manage.py"),
        "runserver",
        "--noreload",
        f"127.0.0.1:{port}",
    ]
    child = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(f"{url}/whoami", child, tmp / "django.log")
        yield url
    finally:
        child.terminate()
        child.wait(10)
        log.close()


@contextlib.contextmanager
def sidecar(world: World) -> Iterator[str]:
    """The recipe's plain upstream on an ephemeral port, and the proxy configured by the recipe's YAML."""
    with recipe_module(ADAPTERS / "sidecar" / "upstream.py") as upstream:
        server = upstream.make_server(0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            settings = load_settings(str(ADAPTERS / "sidecar" / "authmw.yaml"))
            target = f"http://127.0.0.1:{server.server_address[1]}"
            with serve_asgi(build_app(replace(settings, upstream=target), world.store)) as url:
                server.sidecar = url  # whose assertions the upstream verifies
                yield url
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10)


@pytest.fixture(scope="module", params=RECIPES)
def recipe(
    request: pytest.FixtureRequest, world: World, environment: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    name = request.param
    if name == "django":
        with django_server(tmp_path_factory.mktemp("django")) as url:
            yield url
    elif name == "sidecar":
        with sidecar(world) as url:
            yield url
    else:
        with recipe_module(ADAPTERS / f"{name}_app.py") as module:
            serve = serve_wsgi if name == "flask" else serve_asgi
            with serve(module.app) as url:
                yield url


def call(url: str, key: Key, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """Signed by huaweicloudsdkcore itself (SDK-HMAC-SHA256), as a ModelArts client would."""
    # A signed nonce, as a client sending identical requests within one second must add: the recipes are shared
    # by many tests, and the second of two identical requests would be refused as a replay.
    kwargs["headers"] = {"X-Nonce": os.urandom(8).hex(), **(kwargs.get("headers") or {})}
    return huawei_call(url, method=method, path=path, ak=key.access, sk=key.secret, **kwargs)  # type: ignore[no-any-return]


def test_a_signed_caller_reaches_the_app_which_sees_who_it_is(recipe: str, world: World) -> None:
    status, body = call(recipe, world.scientist, "GET", "/whoami")
    assert status == 200
    assert body["user"] == "scientist"
    assert body["user_id"]
    assert body["workspace"] == "0"
    assert body["auth_method"] == "aksk"


def test_an_allowed_action_runs_the_endpoint(recipe: str, world: World) -> None:
    status, body = call(recipe, world.scientist, "POST", "/jobs", body='{"name": "resnet"}')
    assert status == 201
    assert body.get("created_by", body.get("user")) == "scientist"


@pytest.mark.parametrize(
    ("who", "method", "path"),
    [("scientist", "DELETE", "/jobs/42"), ("outsider", "POST", "/jobs")],
    ids=["explicit-deny", "no-policy"],
)
def test_a_missing_action_is_refused_with_the_spec_error(
    recipe: str, world: World, who: str, method: str, path: str
) -> None:
    status, body = call(recipe, world.key(who), method, path)
    assert status == 403
    assert body["error_code"] == "action_denied"
    assert body["request_id"]


def test_a_refusal_carries_the_spec_body_and_headers(recipe: str, world: World) -> None:
    auth = HttpxAuth(world.scientist.access, world.scientist.secret)
    response = httpx.delete(f"{recipe}/jobs/42", auth=auth)
    assert response.status_code == 403
    body = response.json()
    assert set(body) == {"error_code", "error_msg", "request_id"}
    assert body["error_code"] == "action_denied"
    assert response.headers["x-request-id"] == body["request_id"]
    assert response.headers["content-type"] == "application/json"


def test_an_unsigned_request_is_refused_before_the_app(recipe: str) -> None:
    response = httpx.get(f"{recipe}/whoami")
    assert response.status_code == 401
    assert response.json()["error_code"] == "missing_credentials"
    assert response.headers["www-authenticate"].startswith("SDK-HMAC-SHA256")


def _wait_until_serving(url: str, child: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{child.args!r} did not start:\n{log.read_text()}") from None
            time.sleep(0.05)


def test_the_sidecar_recipe_runs_with_its_documented_commands(world: World, environment: None, tmp_path: Path) -> None:
    """``python adapters/sidecar/upstream.py PORT SIDECAR``, ``authmw proxy --config adapters/sidecar/authmw.yaml``."""
    upstream_port, proxy_port = free_port(), free_port()
    log = tmp_path / "sidecar.log"
    commands = [
        [sys.executable, str(ADAPTERS / "sidecar" / "upstream.py"), str(upstream_port), f"http://127.0.0.1:{proxy_port}"],
        [sys.executable, "-m", "authmw", "proxy", "--config", str(ADAPTERS / "sidecar" / "authmw.yaml"),
         "--upstream", f"http://127.0.0.1:{upstream_port}", "--listen", f"127.0.0.1:{proxy_port}", "--audit-log",
         str(tmp_path / "audit.log")],
    ]  # fmt: skip
    with log.open("w") as out:
        children = [subprocess.Popen(c, stdout=out, stderr=subprocess.STDOUT) for c in commands]
        try:
            _wait_until_serving(f"http://127.0.0.1:{upstream_port}/", children[0], log)
            proxy = f"http://127.0.0.1:{proxy_port}"
            _wait_until_serving(f"{proxy}/healthz", children[1], log)
            status, body = call(proxy, world.scientist, "POST", "/jobs", body="{}")
            assert (status, body["user"], body["action"]) == (201, "scientist", "modelarts:trainJob:create")
            status, body = call(proxy, world.scientist, "DELETE", "/jobs/7")
            assert (status, body["error_code"]) == (403, "action_denied")
            assert httpx.get(f"{proxy}/docs/intro").status_code == 200  # a public route: no credential needed
            assert httpx.get(f"{proxy}/elsewhere").json()["error_code"] == "route_not_allowed"
        finally:
            for child in children:
                child.terminate()
                child.wait(10)
