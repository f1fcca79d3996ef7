"""Route tables read from the app itself (issue 14): real FastAPI, Starlette and Flask apps, requests through the
middleware (httpx over ASGI, real werkzeug and uvicorn servers) signed by real clients.

No ``from __future__ import annotations`` here: FastAPI must see the dependencies of endpoints defined inside
functions, which it cannot resolve from string annotations.
"""

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import flask
import httpx
import pytest
import uvicorn
from fastapi import APIRouter, Depends, FastAPI
from flask.views import MethodView
from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount
from starlette.routing import Route as StarletteRoute
from uvicorn.lifespan.on import LifespanOn

from authmw import Access, AuthContext, ConfigurationError, Guard, Route, asgi
from authmw.assembly import open_guard
from authmw.client import HttpxAuth
from authmw.contrib import flask as for_flask
from authmw.contrib import starlette as for_starlette
from authmw.contrib.starlette import action_required, authenticated, protect, public, require, routes_from_app
from authmw.proxy import build_app
from authmw.routes import routes_from_openapi
from authmw.settings import Settings
from tests.support.servers import serve_asgi, serve_wsgi
from tests.support.world import Key, World

LIST, CREATE, DELETE = "modelarts:trainJob:list", "modelarts:trainJob:create", "modelarts:trainJob:delete"
ROOT = Path(__file__).resolve().parents[2]


def nonce() -> dict[str, str]:
    """A signed header that differs: the same request signed twice in one second is a replay."""
    return {"x-nonce": uuid.uuid4().hex}


@pytest.fixture(scope="module")
def environment(world: World) -> Iterator[None]:
    """protect(app, store=...) opens the store by URL, as an app does: its master key comes from the environment."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTHMW_MASTER_KEY_FILE", world.key_file)
        patch.delenv("AUTHMW_MASTER_KEY", raising=False)
        yield


def auth(key: Key) -> HttpxAuth:
    return HttpxAuth(key.access, key.secret)


def audit(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "authmw.audit"]


def jobs_app() -> FastAPI:
    """Router-level and route-level requirements, a dependency's dependency, typed parameters, marks, a mount."""
    app = FastAPI()
    jobs = APIRouter(prefix="/jobs", dependencies=[Depends(require(LIST))])

    @jobs.get("")
    async def list_jobs() -> list[str]:
        return ["j1"]

    inner = APIRouter(dependencies=[])

    @inner.get("/{job_id}/logs/{rest:path}")
    async def logs(job_id: int, rest: str) -> dict[str, Any]:
        return {"job": job_id, "rest": rest}

    jobs.include_router(inner)
    app.include_router(jobs, prefix="/v1")

    async def may_delete(context: Annotated[AuthContext, Depends(require(DELETE))]) -> AuthContext:
        return context

    @app.delete("/v1/runs/{run_id}")
    async def delete_run(run_id: uuid.UUID, context: Annotated[AuthContext, Depends(may_delete)]) -> dict[str, Any]:
        return {"deleted": str(run_id), "action": context.action}

    @app.post("/v1/runs", status_code=201)
    async def create_run(context: Annotated[AuthContext, Depends(require(CREATE))]) -> dict[str, Any]:
        return {"by": context.principal.user_name if context.principal else None}

    @app.get("/healthz")
    @public
    async def health() -> str:
        return "ok"

    @app.get("/whoami")
    @authenticated
    async def whoami(request: Request) -> dict[str, Any]:
        return {"user": request.user.display_name}

    @action_required(CREATE)
    async def legacy(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"legacy:{request.path_params['n']}")

    app.mount("/legacy", Starlette(routes=[StarletteRoute("/{n:int}", legacy, methods=["POST"])]))
    return app


def test_a_fastapi_app_gives_its_routes_with_their_actions_and_types() -> None:
    table = {(r.method, r.template): (r.action or r.access.value) for r in routes_from_app(jobs_app())}
    assert table == {
        ("GET", "/openapi.json"): "public",
        ("GET", "/docs"): "public",
        ("GET", "/docs/oauth2-redirect"): "public",
        ("GET", "/redoc"): "public",
        ("GET", "/v1/jobs"): LIST,  # the router's dependency
        ("GET", "/v1/jobs/{job_id:int}/logs/{rest+}"): LIST,  # an included router inherits it
        ("DELETE", "/v1/runs/{run_id:uuid}"): DELETE,  # a dependency's dependency, a UUID parameter
        ("POST", "/v1/runs"): CREATE,
        ("GET", "/healthz"): "public",
        ("GET", "/whoami"): "authenticate-only",
        ("POST", "/legacy/{n:int}"): CREATE,  # a plain Starlette endpoint in a mounted app
    }


@pytest.fixture(scope="module")
def jobs_client(world: World, environment: None) -> Iterator[httpx.Client]:
    app = jobs_app()
    guard = protect(app, store=world.url)
    assert isinstance(guard, Guard)
    transport = httpx.ASGITransport(app=app)

    # httpx's ASGI transport is async only: drive it from a sync client through a small bridge.
    import anyio

    class Bridge(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            async def call() -> httpx.Response:
                response = await transport.handle_async_request(request)
                body = await response.aread()
                return httpx.Response(response.status_code, headers=response.headers, content=body)

            return anyio.run(call)

    with httpx.Client(transport=Bridge(), base_url="http://app") as client:
        yield client
    guard.identity.store.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", ["/docs", "/openapi.json", "/redoc", "/docs/oauth2-redirect", "/healthz"])
def test_the_documentation_routes_and_public_handlers_need_no_credentials(jobs_client: httpx.Client, path: str) -> None:
    assert jobs_client.get(path).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "who", "status", "code"),
    [
        ("GET", "/v1/jobs", "scientist", 200, None),
        ("GET", "/v1/jobs", None, 401, "missing_credentials"),
        ("GET", "/v1/jobs", "outsider", 403, "action_denied"),  # no policy at all
        ("GET", "/v1/jobs/42/logs/a/b", "scientist", 200, None),
        ("GET", "/v1/jobs/x/logs/a", "scientist", 400, "invalid_path_parameter"),  # {job_id:int}
        ("POST", "/v1/runs", "scientist", 201, None),
        ("DELETE", f"/v1/runs/{uuid.UUID(int=7)}", "scientist", 403, "action_denied"),  # developers: Deny delete
        ("DELETE", f"/v1/runs/{uuid.UUID(int=7)}", "admin", 200, None),
        ("GET", "/whoami", "outsider", 200, None),  # authenticate-only: no action
        ("GET", "/whoami", None, 401, "missing_credentials"),
        ("POST", "/legacy/3", "scientist", 200, None),
        ("POST", "/legacy/3", "outsider", 403, "action_denied"),
        ("GET", "/not-served", "admin", 403, "route_not_allowed"),
    ],
)
def test_derived_routes_are_decided_by_policy(
    jobs_client: httpx.Client, world: World, method: str, path: str, who: str | None, status: int, code: str | None
) -> None:
    response = jobs_client.request(method, path, auth=auth(world.key(who)) if who else None, headers=nonce())
    assert response.status_code == status, response.text
    if code is not None:
        assert response.json()["error_code"] == code


def test_the_middleware_decides_a_derived_route_once(
    jobs_client: httpx.Client, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="authmw.audit")
    response = jobs_client.post("/v1/runs", auth=auth(world.scientist), headers=nonce())
    assert response.json() == {"by": "scientist"}
    assert [r["action"] for r in audit(caplog)] == [CREATE]  # require() found the middleware's decision


def test_a_route_without_an_action_stops_the_app_at_start_up(world: World, environment: None) -> None:
    app = FastAPI()

    @app.get("/reports/{report_id}")
    async def naked(report_id: str) -> str:
        return report_id

    with pytest.raises(ConfigurationError, match=r"GET /reports/\{report_id\}: the app serves this route but"):
        protect(app, store=world.url)
    plain = Starlette(routes=[StarletteRoute("/admin", PlainTextResponse("x"), methods=["POST"])])
    with pytest.raises(ConfigurationError, match="POST /admin: the app serves"):
        routes_from_app(plain)


def test_a_route_naming_two_actions_is_refused() -> None:
    app = FastAPI(dependencies=[Depends(require(LIST))])

    @app.post("/jobs", dependencies=[Depends(require(CREATE))])
    async def create() -> None: ...

    with pytest.raises(ConfigurationError, match=f"POST /jobs: names {LIST}, {CREATE}; a route has one"):
        routes_from_app(app)


def test_protected_documentation_and_an_opaque_mount() -> None:
    app = FastAPI(docs_url="/api-docs", redoc_url=None)
    app.mount("/static", public(Starlette()))  # an app of its own: the mark covers everything below it
    table = {(r.method, r.template): r for r in routes_from_app(app, docs_access="authenticate-only")}
    assert set(table) == {
        ("GET", "/openapi.json"),
        ("GET", "/api-docs"),
        ("GET", "/docs/oauth2-redirect"),  # its own setting: swagger_ui_oauth2_redirect_url
        ("*", "/static/{path+}"),
    }
    assert table["GET", "/api-docs"].access is Access.AUTHENTICATE_ONLY
    assert table["*", "/static/{path+}"].access is Access.PUBLIC
    by_action = routes_from_app(FastAPI(redoc_url=None, docs_url=None), docs_access="modelarts:docs:get")
    assert [(r.template, r.action) for r in by_action] == [("/openapi.json", "modelarts:docs:get")]

    async def files(scope: Any, receive: Any, send: Any) -> None: ...

    with pytest.raises(ConfigurationError, match=r"\* /files/\.\.\.: the app serves this route but names"):
        routes_from_app([Mount("/files", files)])


def test_documentation_can_require_credentials(world: World, environment: None) -> None:
    app = FastAPI()
    guard = protect(app, store=world.url, docs_access="authenticate-only")
    with serve_asgi(app) as url:
        assert httpx.get(f"{url}/docs").status_code == 401
        assert httpx.get(f"{url}/docs", auth=auth(world.outsider)).status_code == 200
    guard.identity.store.close()  # type: ignore[attr-defined]


def test_starlette_first_match_order_is_checked() -> None:
    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse("")

    me = public(lambda request: PlainTextResponse("me"))
    shadowed = [
        StarletteRoute("/users/{user_id}", action_required(LIST)(endpoint)),
        StarletteRoute("/users/me", me),
    ]
    with pytest.raises(ConfigurationError, match=r"GET /users/me is declared after GET /users/\{user_id\}"):
        routes_from_app(shadowed)
    assert len(routes_from_app(shadowed[::-1])) == 2  # the literal first: both pick the same route
    typed = [StarletteRoute("/users/{user_id:int}", action_required(LIST)(endpoint)), StarletteRoute("/users/me", me)]
    assert len(routes_from_app(typed)) == 2  # "me" is never an int: no path reaches both
    any_method = [StarletteRoute("/users/me", authenticated(reports_endpoint())), StarletteRoute("/users/me", me)]
    with pytest.raises(ConfigurationError, match=r"GET /users/me is declared after \* /users/me"):
        routes_from_app(any_method)  # the endpoint class answers GET first; the table prefers the GET route
    assert len(routes_from_app(any_method[::-1])) == 2


def test_a_route_in_the_configuration_and_in_the_app_is_refused(world: World, environment: None) -> None:
    app = FastAPI(openapi_url=None)

    @app.post("/v1/runs")
    async def create(context: Annotated[AuthContext, Depends(require(CREATE))]) -> None: ...

    configured = {"method": "POST", "path": "/v1/runs", "action": CREATE}
    with pytest.raises(ConfigurationError, match="POST /v1/runs is defined twice"):
        protect(app, store=world.url, routes=[configured])
    other = {"method": "GET", "path": "/elsewhere", "access": "public"}
    guard = protect(app, store=world.url, routes=[other])  # the configured routes join the app's
    assert {r.name for r in guard.routes.routes} == {"GET /elsewhere", "POST /v1/runs"}
    guard.identity.store.close()  # type: ignore[attr-defined]


def test_a_route_declared_after_protect_fails_the_lifespan_start_up(world: World, environment: None) -> None:
    app = FastAPI()
    guard = protect(app, store=world.url)

    @app.get("/late")
    @public
    async def late() -> str:
        return "late"

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    import anyio

    anyio.run(app, {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert "declared after protect(app): GET /late" in sent[0]["message"]
    lifespan = LifespanOn(uvicorn.Config(app, lifespan="auto"))  # a real server refuses to start, even in auto
    anyio.run(lifespan.startup)
    assert lifespan.startup_failed
    assert lifespan.should_exit
    guard.identity.store.close()  # type: ignore[attr-defined]


def reports_endpoint() -> type[HTTPEndpoint]:
    class Reports(HTTPEndpoint):
        @action_required(LIST)
        def get(self, request: Request) -> JSONResponse:  # sync: run where Starlette would run it
            return JSONResponse({"user": request.user.display_name})

        @action_required(DELETE)
        async def delete(self, request: Request) -> JSONResponse:
            return JSONResponse({"deleted": True})

    return Reports


def test_a_plain_starlette_app_over_uvicorn(world: World) -> None:
    app = Starlette(routes=[StarletteRoute("/reports", public(reports_endpoint()))])
    assert [(r.method, r.access) for r in routes_from_app(app)] == [("*", Access.PUBLIC)]  # the class's mark
    app = Starlette(routes=[StarletteRoute("/reports", reports_endpoint())])
    routes = routes_from_app(app)
    assert [(r.method, r.action) for r in routes] == [("GET", LIST), ("DELETE", DELETE)]  # each handler's
    guard = open_guard(world.store, config=Settings(), routes=routes)
    app.add_middleware(asgi.AuthMiddleware, guard=guard)
    for_starlette.install_error_handler(app)
    with serve_asgi(app) as url:
        assert httpx.get(f"{url}/reports").status_code == 401
        assert httpx.get(f"{url}/reports", auth=auth(world.scientist)).json() == {"user": "scientist"}
        refused = httpx.get(f"{url}/reports", auth=auth(world.outsider))
        assert (refused.status_code, refused.json()["error_code"]) == (403, "action_denied")
        refused = httpx.delete(f"{url}/reports", auth=auth(world.scientist))
        assert (refused.status_code, refused.json()["error_code"]) == (403, "action_denied")
        refused = httpx.post(f"{url}/reports", auth=auth(world.admin))  # no handler: not in the table
        assert (refused.status_code, refused.json()["error_code"]) == (403, "route_not_allowed")


def test_an_endpoint_class_method_without_an_action_is_refused() -> None:
    class Half(HTTPEndpoint):
        @action_required(LIST)
        async def get(self, request: Request) -> PlainTextResponse:
            return PlainTextResponse("")

        async def put(self, request: Request) -> PlainTextResponse:
            return PlainTextResponse("")

    with pytest.raises(ConfigurationError, match="PUT /half: the app serves this route but names no IAM action"):
        routes_from_app([StarletteRoute("/half", Half)])


def test_a_bound_method_endpoint_takes_a_mark() -> None:
    class Service:
        async def health(self, request: Request) -> PlainTextResponse:
            return PlainTextResponse("ok")

    service = Service()
    assert [r.access for r in routes_from_app([StarletteRoute("/h", public(service.health))])] == [Access.PUBLIC]


def test_action_required_needs_the_request() -> None:
    async def no_request() -> None: ...

    with pytest.raises(ConfigurationError, match="the endpoint takes no request"):
        action_required(LIST)(no_request)


def test_an_openapi_document_names_the_actions(world: World) -> None:
    app = FastAPI()

    @app.get("/models/{model_id}", openapi_extra={"x-iam-action": "modelarts:model:get"})
    async def get_model(model_id: int) -> dict[str, int]:
        return {"model": model_id}

    @app.get("/ping", openapi_extra={"x-iam-access": "public"})
    async def ping() -> str:
        return "pong"

    routes = routes_from_openapi(app.openapi())
    assert [(r.method, r.template, r.action or r.access.value) for r in routes] == [
        ("GET", "/models/{model_id:int}", "modelarts:model:get"),
        ("GET", "/ping", "public"),
    ]
    # Any app (here the FastAPI one, as a sidecar would see it): the table comes from the document alone.
    guard = open_guard(world.store, config=Settings(), routes=routes)
    app.add_middleware(asgi.AuthMiddleware, guard=guard)
    with serve_asgi(app) as url:
        assert httpx.get(f"{url}/ping").text == '"pong"'
        assert httpx.get(f"{url}/models/042", auth=auth(world.scientist)).json() == {"model": 42}
        assert httpx.get(f"{url}/models/1", auth=auth(world.outsider)).status_code == 403
        assert httpx.get(f"{url}/docs", auth=auth(world.admin)).status_code == 403  # not in the document


def test_an_openapi_document_file(world: World) -> None:
    document = json.loads((ROOT / "tests" / "data" / "openapi" / "reports.json").read_text())
    routes = routes_from_openapi(document, prefix="/api")
    assert {(r.method, r.template): r.resource for r in routes} == {
        ("GET", "/api/reports/{report_id:uuid}"): "reports:*:*:report:{report_id}",
        ("DELETE", "/api/reports/{report_id:uuid}"): None,
        ("GET", "/api/health"): None,
    }


def test_the_openapi_setting_gives_the_sidecar_its_routes(world: World, tmp_path: Path) -> None:
    """``openapi: FILE`` in the configuration: the proxy (any upstream, any language) routes by the document."""
    document = ROOT / "tests" / "data" / "openapi" / "reports.json"
    guard = open_guard(world.store, config=Settings(openapi=str(document)))
    assert {r.name for r in guard.routes.routes} == {
        "GET /reports/{report_id:uuid}",
        "DELETE /reports/{report_id:uuid}",
        "GET /health",
    }
    as_yaml = tmp_path / "reports.yaml"
    as_yaml.write_text("paths:\n  /health:\n    get: {x-iam-access: public}\n")
    upstream = Starlette(routes=[StarletteRoute("/health", PlainTextResponse("upstream ok"))])
    with serve_asgi(upstream) as target:
        proxy = build_app(Settings(openapi=str(as_yaml), upstream=target), world.store)
        with serve_asgi(proxy) as url:
            assert httpx.get(f"{url}/health").text == "upstream ok"
            assert httpx.get(f"{url}/reports", auth=auth(world.admin)).status_code == 403  # not in the document
    for content, message in [(None, "openapi: cannot read"), ("{[", "neither JSON nor YAML"), ("{}", "no paths")]:
        broken = tmp_path / "broken.json"
        broken.unlink(missing_ok=True)
        if content is not None:
            broken.write_text(content)
        with pytest.raises(ConfigurationError, match=message):
            open_guard(world.store, config=Settings(openapi=str(broken)))


# -- Flask ------------------------------------------------------------------------------------------------


def flask_jobs() -> flask.Flask:
    app = flask.Flask(__name__)

    @app.get("/jobs")
    @for_flask.require(LIST)
    def list_jobs() -> list[str]:
        return ["j1"]

    @app.delete("/jobs/<int:job_id>")
    @for_flask.require(DELETE)
    def delete_job(job_id: int) -> dict[str, int]:
        return {"deleted": job_id}

    @app.get("/files/<path:name>")
    @for_flask.authenticated
    def files(name: str) -> str:
        return name

    @app.get("/health")
    @for_flask.public
    def health() -> str:
        return "ok"

    class Runs(MethodView):
        decorators = [for_flask.require(CREATE)]  # noqa: RUF012  (Flask's own class attribute)

        def post(self) -> tuple[dict[str, str], int]:
            return {"created": "run"}, 201

    app.add_url_rule("/runs", view_func=Runs.as_view("runs"))
    manual = flask.Blueprint("manual", __name__, static_folder="assets", url_prefix="/manual")

    @manual.get("/pages/<uuid:page>")
    @for_flask.require(LIST)
    def page(page: uuid.UUID) -> str:
        return str(page)

    app.register_blueprint(manual)
    return app


def test_a_flask_app_gives_its_routes_with_their_actions_and_types() -> None:
    table = {(r.method, r.template): (r.action or r.access.value) for r in for_flask.routes_from_app(flask_jobs())}
    assert table == {
        ("GET", "/static/{filename+}"): "public",  # Flask's own static files
        ("GET", "/jobs"): LIST,
        ("DELETE", "/jobs/{job_id:int}"): DELETE,
        ("GET", "/files/{name+}"): "authenticate-only",
        ("GET", "/health"): "public",
        ("POST", "/runs"): CREATE,  # a class-based view's decorators
        ("GET", "/manual/assets/{filename+}"): "public",  # a blueprint's static files
        ("GET", "/manual/pages/{page:uuid}"): LIST,
    }


def test_a_flask_app_behind_protect(world: World, environment: None) -> None:
    app = flask_jobs()
    guard = for_flask.protect(app, store=world.url)
    with serve_wsgi(app) as url:
        assert httpx.get(f"{url}/health").text == "ok"
        assert httpx.get(f"{url}/jobs").status_code == 401
        assert httpx.get(f"{url}/jobs", auth=auth(world.scientist)).json() == ["j1"]
        refused = httpx.delete(f"{url}/jobs/7", auth=auth(world.scientist))  # developers: Deny delete
        assert (refused.status_code, refused.json()["error_code"]) == (403, "action_denied")
        assert httpx.delete(f"{url}/jobs/007", auth=auth(world.admin)).json() == {"deleted": 7}
        assert httpx.get(f"{url}/files/a/b.txt", auth=auth(world.outsider)).text == "a/b.txt"
        assert httpx.post(f"{url}/runs", auth=auth(world.scientist)).status_code == 201
        assert httpx.post(f"{url}/runs", auth=auth(world.outsider)).status_code == 403
        page = uuid.UUID(int=5)
        assert httpx.get(f"{url}/manual/pages/{page}", auth=auth(world.scientist)).text == str(page)
        refused = httpx.get(f"{url}/manual/pages/5", auth=auth(world.scientist))  # not a UUID: before the view
        assert (refused.status_code, refused.json()["error_code"]) == (400, "invalid_path_parameter")
    guard.identity.store.close()  # type: ignore[attr-defined]


def test_a_flask_view_without_an_action_stops_the_app_at_start_up(world: World, environment: None) -> None:
    app = flask.Flask(__name__)

    @app.route("/reports/<report_id>", methods=["GET", "PUT"])
    def naked(report_id: str) -> str:
        return report_id

    with pytest.raises(ConfigurationError, match=r"GET /reports/<report_id>: the app serves this route but"):
        for_flask.protect(app, store=world.url)
    app = flask.Flask(__name__, static_folder=None)

    @app.get("/ok")
    @for_flask.require(LIST)  # under the route decorator: Flask registers the checked view
    def ok() -> str:
        return "ok"

    assert [r.name for r in for_flask.routes_from_app(app)] == ["GET /ok"]
    with pytest.raises(ConfigurationError, match="static_access"):
        for_flask.routes_from_app(flask.Flask(__name__), static_access="everyone")


def test_flask_converters_and_methods() -> None:
    app = flask.Flask(__name__, static_folder=None)

    @app.route("/n/<int(signed=True):n>/<uuid:u>/<float:f>/<name>.txt", methods=["GET", "POST", "OPTIONS"])
    @for_flask.public
    def numbers(n: int, u: uuid.UUID, f: float, name: str) -> str:
        return ""

    routes = for_flask.routes_from_app(app)
    assert [r.name for r in routes] == [
        "GET /n/{n}/{u:uuid}/{f}/{name}",
        "OPTIONS /n/{n}/{u:uuid}/{f}/{name}",
        "POST /n/{n}/{u:uuid}/{f}/{name}",
    ]
    assert all(isinstance(r, Route) for r in routes)
