"""The three forms of authmw (ASGI middleware, WSGI middleware, sidecar proxy) over one real store; the
fixtures that start them are in tests/pipeline/conftest.py."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from authmw import asgi, wsgi
from authmw.assembly import open_guard
from authmw.envoy.server import build_authz
from authmw.guard import Guard
from authmw.proxy import build_app
from authmw.proxy.server import header_deadline_protocol
from authmw.settings import Settings
from tests.support.servers import serve_asgi, serve_wsgi
from tests.support.world import World, echo_asgi, echo_wsgi

# The preset, plus a websocket terminal route (the handshake is a GET).
SETTINGS = Settings(
    routes=({"method": "GET", "path": "/v1/{project_id}/notebooks/{id}/terminal", "action": "modelarts:notebook:get"},),
    presets=("modelarts",),
)
FORMS = ("asgi", "wsgi", "proxy")


@dataclass(frozen=True)
class Form:
    name: str
    url: str
    guard: Guard
    app: Any = None
    upstream: str | None = None  # the proxy's upstream server

    def facts(self, body: dict[str, Any]) -> dict[str, Any]:
        """What the app was told: from the context (middleware) or the X-Authmw-* headers (proxy)."""
        if self.name != "proxy":
            return dict(body["authmw"] or {})
        headers = body["headers"]
        return {
            "user": headers.get("x-authmw-user-name"),
            "workspace": headers.get("x-authmw-workspace-id"),
            "action": headers.get("x-authmw-action"),
            "method": headers.get("x-authmw-auth-method"),
            "project": headers.get("x-authmw-project-id"),
            "agency": headers.get("x-authmw-agency"),
        }


@contextlib.contextmanager
def running(
    name: str,
    world: World,
    settings: Settings = SETTINGS,
    *,
    wrap_authz: Any = lambda app: app,
    asgi_app: Any = echo_asgi,
    wsgi_app: Any = echo_wsgi,
    http: str = "h11",
) -> Iterator[Form]:
    """One form of authmw in front of an app (the echo apps by default), served over real HTTP; the proxy's
    upstream is ``asgi_app`` served by uvicorn. ``http``: uvicorn's parser for the ASGI forms, ``"h11"`` or
    ``"httptools"`` (served on uvloop, as the proxy and authz serve themselves); the proxy is served with its own
    protocol (:func:`~authmw.proxy.server.header_deadline_protocol`). ``"authz"``: the Envoy decision service
    alone (no app: what it allows, Envoy would forward), on httptools and uvloop as ``authmw authz`` serves it,
    wrapped in ``wrap_authz``."""
    loop = "uvloop" if http == "httptools" else "asyncio"
    if name == "asgi":
        guard = open_guard(world.store, config=settings)
        with serve_asgi(asgi.AuthMiddleware(asgi_app, guard=guard), http=http, loop=loop) as url:
            yield Form(name, url, guard)
    elif name == "wsgi":
        guard = open_guard(world.store, config=settings)
        with serve_wsgi(wsgi.AuthMiddleware(wsgi_app, guard=guard)) as url:
            yield Form(name, url, guard)
    elif name == "authz":
        authz = build_authz(settings, world.store)
        with serve_asgi(wrap_authz(authz), http="httptools", loop="uvloop") as url:
            yield Form(name, url, authz.guard, authz)
    else:
        with serve_asgi(asgi_app) as upstream:
            app = build_app(replace(settings, upstream=upstream), world.store)
            protocol = header_deadline_protocol(settings.header_timeout, http)
            with serve_asgi(app, http=protocol, loop=loop) as url:
                yield Form(name, url, app.guard, app, upstream)
