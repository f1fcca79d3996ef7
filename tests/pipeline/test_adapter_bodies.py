"""How the adapters hold request bodies: the budget always gets its bytes back, WSGI takes it only as bytes
arrive, and a slow check of a large body runs off the event loop.

Servers: uvicorn (the ASGI middleware and the proxy app) and werkzeug (the WSGI middleware), in this process, so
that the guard can be wrapped (a check that fails or is slow) and the budget read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from authmw import asgi, wsgi
from authmw.assembly import build_guard
from authmw.models import Request
from authmw.proxy import build_app
from authmw.signing import sign_request
from pipeline.conftest import SETTINGS
from pipeline.test_bad_input import JOBS
from pipeline.world import World, echo_asgi, echo_wsgi
from servers import serve_asgi, serve_wsgi

MIB = 1024 * 1024


class Wrapped:
    """A guard whose ``check`` first calls ``before(request)`` (raise, or sleep); everything else is the real
    guard's."""

    def __init__(self, inner: Any, before: Any) -> None:
        self._inner, self._before = inner, before

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def check(self, request: Request) -> Any:
        self._before(request)
        return self._inner.check(request)


def _fail(_request: Request) -> None:
    raise RuntimeError("a bug, or a store driver's own error")


@contextlib.contextmanager
def served(world: World, form: str, before: Any) -> Iterator[tuple[str, asgi.BodyBudget]]:
    """``form`` (asgi, wsgi, proxy) with its guard wrapped; yields its URL and body budget."""
    guard: Any = Wrapped(build_guard(SETTINGS, store=world.store), before)
    if form == "asgi":
        middleware = asgi.AuthMiddleware(echo_asgi, guard=guard)
        with serve_asgi(middleware) as url:
            yield url, middleware.body_budget
    elif form == "wsgi":
        wsgi_middleware = wsgi.AuthMiddleware(echo_wsgi, guard=guard)
        with serve_wsgi(wsgi_middleware) as url:
            yield url, wsgi_middleware.body_budget
    else:
        with serve_asgi(echo_asgi) as upstream:
            app = build_app(replace(SETTINGS, upstream=upstream), world.store)
            app.guard = guard
            with serve_asgi(app) as url:
                yield url, app.body_budget


def post(world: World, url: str, body: bytes, timeout: float = 30.0) -> httpx.Response:
    signed = sign_request(
        "POST",
        url + JOBS.replace("{p}", world.project),
        {"Content-Type": "application/json"},
        body,
        access_key=world.scientist.access,
        secret_key=world.scientist.secret,
    )
    return httpx.post(signed.url, headers=signed.headers, content=signed.body, timeout=timeout)


# -- review finding 8: the budget leaked on any exception that is not an AuthmwError ----------------------------


@pytest.mark.parametrize("form", ["asgi", "wsgi", "proxy"])
def test_the_body_budget_comes_back_when_the_check_raises_something_else(world: World, form: str) -> None:
    with served(world, form, _fail) as (url, budget):
        for _ in range(3):
            assert post(world, url, b'{"kind": "job", "pad": "' + b"x" * 100_000 + b'"}').status_code == 500
        assert budget.used == 0
