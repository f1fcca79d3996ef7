"""What each supported server hands the app for unusual request-targets, and that authmw checks the same path.

Observed (uvicorn 0.55 with h11; werkzeug 3.1's dev server; the standard library's wsgiref):

==========================  ===========================================  ==========================================
target                      uvicorn (h11): ``path`` / ``raw_path``       werkzeug / wsgiref: ``PATH_INFO``
==========================  ===========================================  ==========================================
``/a/b#/c``                 ``/a/b#/c`` in both                          ``/a/b`` (REQUEST_URI keeps ``#/c``) /
                                                                         ``/a/b#/c``
``/a/b?x=1#f``              query_string ``x=1#f``                       QUERY_STRING ``x=1`` / ``x=1#f``
``/a/%23/b``                ``/a/#/b`` / ``/a/%23/b``                    ``/a/#/b`` (REQUEST_URI ``/a/%23/b``)
``http://h/a/b``            ``http://h/a/b`` in both                     ``/a/b`` (REQUEST_URI the whole URL) /
                                                                         ``http://h/a/b``
``*``                       ``*``                                        ``*`` (werkzeug) / ``*``
==========================  ===========================================  ==========================================

Probed outside this suite (neither is installed here): uvicorn 0.55 with httptools 0.9 cuts the fragment off
both ``path`` and ``raw_path`` (and ``x=1#f`` to ``x=1``) and takes ``/a/b`` out of an absolute-form target;
gunicorn 27 keeps the raw target in ``RAW_URI`` (fragment, absolute form and all), cuts the fragment off
``PATH_INFO``, and drops header names with ``_``, as werkzeug does. Since servers disagree about ``#``, authmw
refuses a target with a fragment (RFC 9112 allows none) with 400 ``malformed_request``; every other target is
either refused or read as the app routes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from authmw import admission, wsgi
from authmw.errors import AuthmwError
from tests.support.forms import running
from tests.support.raw import NB, Ctx, Raw, exchange, signed
from tests.support.servers import serve_asgi, serve_wsgi, serve_wsgiref
from tests.support.world import World, echo_wsgi

TARGETS = ["/a/b#/c", "/a/b?x=1#f", "/a/%23/b", "/a?q=%23", "/a/b?x#", "http://h.example/a/b", "*", "/a/b"]


def _authmw_view(build: Callable[[], Any]) -> str | None:
    """The path authmw's adapter would check (decoded, as apps route on it), or None if it refuses."""
    try:
        return unquote(build().path, "latin-1")
    except AuthmwError:
        return None


async def probe_asgi(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    seen = {"routes_on": scope["path"], "authmw": _authmw_view(lambda: admission.request_from_scope(scope, b""))}
    body = json.dumps(seen).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]}
    )
    await send({"type": "http.response.body", "body": body})


def probe_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    routes_on = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    seen = {"routes_on": routes_on, "authmw": _authmw_view(lambda: wsgi.request_from_environ(environ, b""))}
    body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture(params=["uvicorn", "werkzeug", "wsgiref"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    if request.param == "uvicorn":
        with serve_asgi(probe_asgi) as url:
            yield request.param, url
    elif request.param == "werkzeug":
        with serve_wsgi(probe_wsgi) as url:
            yield request.param, url
    else:
        with serve_wsgiref(probe_wsgi) as url:
            yield request.param, url


@pytest.mark.parametrize("target", TARGETS)
def test_authmw_refuses_or_checks_the_path_the_app_routes_on(server: tuple[str, str], target: str) -> None:
    """wsgiref decodes the path and keeps no raw target: a ``#`` there may have been ``%23``, and authmw reads
    it as data, exactly as the app routes on it."""
    server_name, url = server
    split = urlsplit(url)
    method = "OPTIONS" if target == "*" else "GET"
    raw = Raw(method, target, [("Host", split.netloc)])
    reply = exchange((split.hostname or "", split.port or 80), raw.encode())
    if reply.status != 200:  # the server itself refused the target: nothing reaches the app
        assert 400 <= reply.status < 500
        return
    seen = reply.json()
    if "#" in target and not server_name.startswith("wsgiref"):
        assert seen["authmw"] is None, seen  # refused, whatever the server made of the fragment
    assert seen["authmw"] in (None, seen["routes_on"]), seen


@pytest.mark.parametrize("form", ["asgi", "wsgi", "wsgiref", "proxy"])
def test_a_fragment_after_a_signed_path_is_refused(world: World, form: str) -> None:
    """``/notebooks#/raw`` signed as ``/notebooks`` was authorized as the notebook list while uvicorn's h11
    handed the app ``/notebooks#/raw`` (another handler); now every form answers 400 malformed_request (behind
    wsgiref, which keeps no raw target, authmw reads the ``#`` as the data the app routes on: no such route)."""
    if form == "wsgiref":
        from authmw.assembly import open_guard
        from tests.support.forms import SETTINGS

        guard = open_guard(world.store, config=SETTINGS)
        context: Any = serve_wsgiref(wsgi.AuthMiddleware(echo_wsgi, guard=guard))
    else:
        context = running(form, world)
    with context as started:
        url = started if isinstance(started, str) else started.url
        split = urlsplit(url)
        raw = signed(Ctx(world, split.netloc), "GET", NB)
        raw.target += "#/raw"
        reply = exchange((split.hostname or "", split.port or 80), raw.encode())
    expected = (403, "route_not_allowed") if form == "wsgiref" else (400, "malformed_request")
    assert (reply.status, reply.json()["error_code"]) == expected, reply.body[:300]
