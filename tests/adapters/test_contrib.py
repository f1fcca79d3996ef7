"""authmw.contrib: per-endpoint checks in FastAPI and Flask apps, over real servers and real signed clients.

No ``from __future__ import annotations`` here: FastAPI must see the dependencies of endpoints defined inside
functions, which it cannot resolve from string annotations.
"""

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Annotated, Any

import flask
import httpx
import pytest
from fastapi import Depends, FastAPI, WebSocket
from starlette.requests import Request
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from authmw import AuthContext, ConfigurationError, Guard, asgi, wsgi
from authmw.assembly import open_guard
from authmw.client import HttpxAuth
from authmw.contrib import flask as for_flask
from authmw.contrib.starlette import current_context, install_error_handler, require
from authmw.settings import Settings
from authmw.signing import sign_request
from tests.support.servers import serve_asgi, serve_wsgi
from tests.support.world import Key, World

CREATE, DELETE = "modelarts:trainJob:create", "modelarts:trainJob:delete"


def guard_for(world: World, **settings: Any) -> Guard:
    return open_guard(world.store, config=Settings(unmatched="authenticate-only", **settings))


def fastapi_app(guard: Guard, lenient: Guard) -> FastAPI:
    app = FastAPI()
    install_error_handler(app)
    app.add_middleware(asgi.AuthMiddleware, guard=guard)

    @app.delete("/jobs/{job_id}")
    async def delete(context: Annotated[AuthContext, Depends(require(DELETE))]) -> dict[str, Any]:
        return {"action": context.action, "refusal": context.error.code if context.error else None}

    @app.post("/lenient")
    async def lenient_create(context: Annotated[AuthContext, Depends(require(CREATE, guard=lenient))]) -> Any:
        return {"reason": context.decision.reason if context.decision else None}

    @app.websocket("/ws/{action}")
    async def terminal(websocket: WebSocket, action: str) -> None:
        await require(action)(websocket)
        await websocket.accept()
        await websocket.send_text(f"{current_context(websocket).principal.user_name}:{action}")  # type: ignore[union-attr]
        await websocket.close()

    return app


@contextlib.contextmanager
def served(world: World, mode: str = "enforce") -> Iterator[str]:
    lenient = guard_for(world, default_allow_without_policies=True)
    with serve_asgi(fastapi_app(guard_for(world, mode=mode), lenient)) as url:
        yield url


def auth(key: Key) -> HttpxAuth:
    return HttpxAuth(key.access, key.secret)


def audit(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "authmw.audit"]


def test_require_audits_the_action_it_decides(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="authmw.audit")
    with served(world) as url:
        response = httpx.delete(f"{url}/jobs/1", auth=auth(world.scientist))
    assert response.status_code == 403
    assert response.json()["error_code"] == "action_denied"
    records = [r for r in audit(caplog) if r["action"] == DELETE]
    assert len(records) == 1
    assert records[0]["outcome"] == "deny"
    assert records[0]["enforced"] is True
    assert records[0]["error_code"] == "action_denied"
    assert records[0]["request_id"] == response.json()["request_id"]
    assert records[0]["policy"] is None


def test_in_dry_run_require_logs_the_refusal_and_lets_the_request_through(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="authmw.audit")
    with served(world, mode="dry-run") as url:
        response = httpx.delete(f"{url}/jobs/1", auth=auth(world.scientist))
    assert response.status_code == 200
    assert response.json() == {"action": DELETE, "refusal": "action_denied"}
    record = next(r for r in audit(caplog) if r["action"] == DELETE)
    assert (record["outcome"], record["enforced"]) == ("deny", False)


def test_an_explicit_guard_decides_instead_of_the_middlewares(world: World) -> None:
    with served(world) as url:
        # The outsider has no policy: only the lenient guard's ModelArts legacy rule lets it through.
        response = httpx.post(f"{url}/lenient", auth=auth(world.outsider))
    assert response.status_code == 200
    assert "legacy" in response.json()["reason"]


def test_a_websocket_handshake_refused_by_require_gets_the_spec_error(world: World) -> None:
    with served(world) as url:

        def open_socket(action: str) -> Any:
            path = f"/ws/{action}"
            signed = sign_request(
                "GET", url + path, {}, b"", access_key=world.scientist.access, secret_key=world.scientist.secret
            )
            headers = {k: v for k, v in signed.headers.items() if k.lower() != "host"}
            return connect("ws" + url[4:] + path, additional_headers=headers)

        with open_socket(CREATE) as ws:
            assert ws.recv(timeout=5) == f"scientist:{CREATE}"
        with pytest.raises(InvalidStatus) as refused:
            open_socket(DELETE)
    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body)["error_code"] == "action_denied"


def flask_app(guard: Guard) -> flask.Flask:
    app = flask.Flask(__name__)
    app.wsgi_app = wsgi.AuthMiddleware(app.wsgi_app, guard=guard)  # type: ignore[method-assign]
    for_flask.install_error_handler(app)

    @app.post("/jobs")
    @for_flask.require(CREATE)
    async def create() -> tuple[dict[str, Any], int]:  # async views run through Flask's ensure_sync
        return {"by": for_flask.context().principal.user_name}, 201  # type: ignore[union-attr]

    @app.delete("/jobs/<job_id>")
    def delete(job_id: str) -> dict[str, str]:
        flask.request.environ["authmw.guard"].authorize(for_flask.context(), DELETE, f"modelarts:*:*:job:{job_id}")
        return {"deleted": job_id}

    return app


def test_flask_async_views_and_raised_refusals(world: World) -> None:
    with serve_wsgi(flask_app(guard_for(world))) as url:
        created = httpx.post(f"{url}/jobs", auth=auth(world.scientist))
        refused = httpx.delete(f"{url}/jobs/9", auth=auth(world.scientist))
    assert (created.status_code, created.json()) == (201, {"by": "scientist"})
    assert refused.status_code == 403
    assert refused.json()["error_code"] == "action_denied"
    assert refused.headers["x-request-id"] == refused.json()["request_id"]


def test_the_helpers_refuse_an_app_not_behind_the_middleware() -> None:
    bare = Request({"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""})
    with pytest.raises(ConfigurationError, match="AuthMiddleware"):
        current_context(bare)
