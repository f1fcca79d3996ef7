"""Malformed and hostile requests against every form (ASGI middleware, WSGI middleware, sidecar proxy, Envoy's
decision service), each under the HTTP servers it runs on (the ASGI ones under uvicorn's h11 and httptools).

Every request is written as raw bytes on a socket, so what is malformed really reaches the server. Each case
names the one stable error code authmw must answer with (SPEC §9, README "Error codes"); the app behind authmw
(the proxy's upstream) counts its calls, and a refused request must never reach it. A few protocol-level cases
may be refused by the HTTP server itself (h11, httptools, werkzeug) before authmw sees them: each case names the
servers that do, and those answer with the server's own 400 (431 for werkzeug's header limits) or hang up, never
a 500 and never by calling the app. The two uvicorn parsers differ: httptools refuses a method it does not know
and a Content-Length beyond 64 bits itself, takes the path out of an absolute-form target (as werkzeug and Envoy
do), and hands a request with two Host headers or none to the app, which authmw refuses (h11 refuses those).

``authz`` (``authmw authz``, on httptools and uvloop) gets each request as Envoy's ext_authz filter would send it:
its origin-form target behind the check prefix (an absolute-form one as its path, as Envoy reads it), everything
else unchanged. There is no app: a check it allows (200) is one Envoy would forward, and counts as the app
reached. Envoy itself refuses some cases before any check (tests/adapters/test_envoy.py sends the suite through
a real Envoy); sent here directly, they show authz refuses them on its own.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from authmw.envoy.app import CHECK_PREFIX
from authmw.errors import all_error_classes
from tests.support.forms import SETTINGS, Form, running
from tests.support.raw import HEX64, JOB1, JOBS, NB, NB1, SERVICE, Ctx, Raw, Reply, exchange, presigned, signed, token
from tests.support.servers import wait_idle
from tests.support.world import Key, World, echo_asgi, echo_wsgi

#: Each form under each HTTP server it is served with here.
SERVED = [
    ("asgi", "h11"),
    ("asgi", "httptools"),
    ("wsgi", "werkzeug"),
    ("proxy", "h11"),
    ("proxy", "httptools"),
    ("authz", "httptools"),
]
SERVERS = frozenset(server for _form, server in SERVED)
#: The statuses a server answers a request it refuses itself with (authmw never sees those).
SERVER_STATUSES = {"h11": {400}, "httptools": {400}, "werkzeug": {400, 431}}
MAX_BODY = 16 * 1024  # small, so an oversized body is cheap to send and fits in the socket buffers
STATUS = {cls.code: cls.status for cls in all_error_classes()}
MESSAGE = {cls.code: cls.message for cls in all_error_classes()}


# -- the servers, with apps that count their calls ----------------------------------------------------------


class Calls:
    """How often the app behind authmw was called (thread-safe: the servers run in their own threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def hit(self) -> None:
        with self._lock:
            self.count += 1


def counting_asgi(calls: Calls) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            calls.hit()
        await echo_asgi(scope, receive, send)

    return app


def counting_authz(calls: Calls) -> Any:
    """Wraps the authz app: every check it allows counts as a call of the app (Envoy would forward it)."""

    def wrap(authz: Any) -> Any:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            async def sending(message: Any) -> None:
                allowed = message["type"] == "http.response.start" and message["status"] == 200
                if allowed and scope["path"].startswith(CHECK_PREFIX + "/"):
                    calls.hit()
                await send(message)

            await authz(scope, receive, sending)

        return app

    return wrap


def counting_wsgi(calls: Calls) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        calls.hit()
        return echo_wsgi(environ, start_response)

    return app


@dataclass(frozen=True)
class Target:
    form: Form
    server: str  # the HTTP server it runs on: h11, httptools or werkzeug
    calls: Calls
    world: World

    @property
    def name(self) -> str:
        return self.form.name

    @property
    def host(self) -> str:
        return urlsplit(self.form.url).netloc

    @property
    def address(self) -> tuple[str, int]:
        split = urlsplit(self.form.url)
        return split.hostname or "127.0.0.1", split.port or 80


@pytest.fixture(scope="module", params=SERVED, ids=[f"{form}-{server}" for form, server in SERVED])
def target(request: pytest.FixtureRequest, world: World) -> Iterator[Target]:
    calls = Calls()
    settings = replace(SETTINGS, max_body=MAX_BODY)
    name, server = request.param
    counting = {"asgi_app": counting_asgi(calls), "wsgi_app": counting_wsgi(calls), "wrap_authz": counting_authz(calls)}
    with running(name, world, settings, http=server, **counting) as form:
        assert form.guard.max_body == MAX_BODY
        yield Target(form, server, calls, world)


def send(target: Target, raw: Raw) -> Reply:
    if target.name == "authz":
        raw = as_checked(raw)
    return exchange(target.address, raw.encode(), half_close=raw.half_close)


def as_checked(raw: Raw) -> Raw:
    """The check request Envoy's ext_authz filter sends for ``raw``: its path behind the check prefix (Envoy takes
    the path out of an absolute-form target); a target Envoy would not read as a path goes as it is."""
    target = raw.target
    if re.match(r"https?://", target):
        split = urlsplit(target)
        target = split.path + (f"?{split.query}" if split.query else "")
    return replace(raw, target=CHECK_PREFIX + target if target.startswith("/") else target)


def plain(c: Ctx, method: str = "GET", path: str = NB, *, query: str = "") -> Raw:
    """An unsigned request."""
    return Raw(method, c.path(path) + (f"?{query}" if query else ""), [("Host", c.host)])


def job(c: Ctx, body: bytes | dict[str, Any], **kwargs: Any) -> Raw:
    """A signed POST of a JSON body to the training-jobs route."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return signed(c, "POST", JOBS, headers={"Content-Type": "application/json"}, body=data, **kwargs)


@dataclass(frozen=True)
class Auth:
    """The fields of a signed request's ``Authorization`` header, to be reassembled wrongly."""

    scheme: str
    ak: str
    signed: str
    sig: str

    @classmethod
    def of(cls, raw: Raw) -> Auth:
        match = re.fullmatch(r"(\S+) Access=([^,]+), SignedHeaders=([^,]+), Signature=(\w+)", raw.get("Authorization"))
        assert match is not None
        return cls(*match.groups())

    def text(self, **changes: str) -> str:
        a = replace(self, **changes)
        return f"{a.scheme} Access={a.ak}, SignedHeaders={a.signed}, Signature={a.sig}"


def reauth(make: Callable[[Auth, Ctx], str], base: Callable[[Ctx], Raw] | None = None) -> Callable[[Ctx], Raw]:
    """A signed GET whose ``Authorization`` is replaced by ``make(fields, ctx)``."""

    def build(c: Ctx) -> Raw:
        raw = signed(c) if base is None else base(c)
        return raw.set("Authorization", make(Auth.of(raw), c))

    return build


def header(name: str, value: str | bytes | Callable[[Ctx], str], base: Callable[[Ctx], Raw] | None = None) -> Any:
    """A signed GET with header ``name`` set (after signing) to ``value``."""

    def build(c: Ctx) -> Raw:
        raw = signed(c) if base is None else base(c)
        return raw.set(name, value(c) if callable(value) else value)

    return build


def at_path(path: str, *, sign: bool = True) -> Callable[[Ctx], Raw]:
    """A GET of ``path`` (raw, as written), signed by the scientist unless ``sign`` is false."""
    return (lambda c: signed(c, "GET", path)) if sign else (lambda c: plain(c, "GET", path))


def today() -> str:
    return time.strftime("%Y%m%d", time.gmtime())


def flip(signature: str) -> str:
    return ("1" if signature[0] == "0" else "0") + signature[1:]


def set_field(name: str, value: str | Callable[[str], str]) -> Callable[[list[list[str]]], None]:
    def edit(fields: list[list[str]]) -> None:
        for item in fields:
            if item[0] == name:
                item[1] = value(item[1]) if callable(value) else value

    return edit


def drop_field(name: str) -> Callable[[list[list[str]]], None]:
    return lambda fields: fields.__setitem__(slice(None), [f for f in fields if f[0] != name])


def repeat_field(name: str) -> Callable[[list[list[str]]], None]:
    return lambda fields: fields.extend([list(f) for f in fields if f[0] == name])


def ws_query(value: str | Callable[[World], str], key: str = "workspace_id") -> Callable[[Ctx], Raw]:
    """The scientist's signed GET naming a workspace in the query."""
    return lambda c: signed(c, query=f"{key}={quote(value(c.world) if callable(value) else value, safe='')}")


def ws_header(value: str | Callable[[World], str]) -> Callable[[Ctx], Raw]:
    return lambda c: signed(c, headers={"X-Workspace-Id": value(c.world) if callable(value) else value})


def ws_body(value: Any) -> Callable[[Ctx], Raw]:
    return lambda c: job(c, {"kind": "job", "workspace_id": value(c.world) if callable(value) else value})


def with_encoded_query(signed_query: Callable[[World], str], sent_query: Callable[[World], str]) -> Any:
    """Signed over ``signed_query``; sent with the equivalent spelling ``sent_query`` (the same canonical form)."""

    def build(c: Ctx) -> Raw:
        raw = signed(c, query=signed_query(c.world))
        raw.target = raw.target.partition("?")[0] + "?" + sent_query(c.world)
        return raw

    return build


def spoofed(raw: Raw, world: World) -> Raw:
    return (
        raw.add("X-Authmw-User-Name", "admin")
        .add("X-Authmw-User-Id", "admin")
        .add("X-Authmw-Workspace-Id", world.private_ws)
        .add("X-Authmw-Allowed-Actions", "*")
        .add("X-Authmw-Auth-Method", "aksk")
    )


def chunked_job(c: Ctx, size: int, chunk: int) -> Raw:
    data = b"x" * size
    raw = signed(c, "POST", JOBS, body=None)
    return raw.chunked([data[i : i + chunk] for i in range(0, size, chunk)])


def deep_json() -> bytes:
    depth = 5000
    return b'{"workspace_id": "0", "x": ' + b"[" * depth + b"]" * depth + b"}"


def encoded_key(name: str) -> str:
    return "".join(f"%{b:02X}" for b in name.encode())


# -- the cases ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad request and the stable code authmw answers it with.

    ``code`` may list two codes only where a bug's fix could reasonably take either way (see the report).
    ``server`` names the HTTP servers (h11, httptools, werkzeug) that refuse the request themselves (their own
    4xx, without authmw's body, or a hang-up). ``per_server`` gives authmw's code behind a server (or ``authz``)
    that reads the request differently (documented per case).
    """

    id: str
    code: str | tuple[str, ...]
    build: Callable[[Ctx], Raw]
    server: frozenset[str] = frozenset()
    per_server: dict[str, str] = field(default_factory=dict)

    def expected(self, server: str) -> tuple[str, ...]:
        code = self.per_server.get(server, self.code)
        return code if isinstance(code, tuple) else (code,)


UVICORN = frozenset({"h11", "httptools"})
H11 = frozenset({"h11"})
ALL = SERVERS

CASES: list[Case] = [
    # --- garbled Authorization ---------------------------------------------------------------------------
    Case("authz/empty-value", "unsupported_scheme", header("Authorization", "")),
    Case("authz/scheme-only", "malformed_authorization", header("Authorization", "SDK-HMAC-SHA256")),
    Case("authz/no-signature-field", "malformed_authorization",
         reauth(lambda a, c: f"{a.scheme} Access={a.ak}, SignedHeaders={a.signed}")),
    Case("authz/no-access-field", "malformed_authorization",
         reauth(lambda a, c: f"{a.scheme} SignedHeaders={a.signed}, Signature={a.sig}")),
    Case("authz/empty-access", "malformed_authorization", reauth(lambda a, c: a.text(ak=""))),
    Case("authz/signature-uppercase-hex", "malformed_authorization", reauth(lambda a, c: a.text(sig=a.sig.upper()))),
    Case("authz/signature-63-hex", "malformed_authorization", reauth(lambda a, c: a.text(sig=a.sig[:-1]))),
    Case("authz/signature-65-hex", "malformed_authorization", reauth(lambda a, c: a.text(sig=a.sig + "0"))),
    Case("authz/signature-not-hex", "malformed_authorization", reauth(lambda a, c: a.text(sig="g" * 64))),
    Case("authz/repeated-access-field", "malformed_authorization",
         reauth(lambda a, c: f"{a.scheme} Access={a.ak}, Access={a.ak}, SignedHeaders={a.signed}, Signature={a.sig}")),
    Case("authz/unknown-extra-field", "malformed_authorization",
         reauth(lambda a, c: a.text() + ", Region=cn-north-4")),
    Case("authz/semicolon-separated-fields", "malformed_authorization",
         reauth(lambda a, c: f"{a.scheme} Access={a.ak}; SignedHeaders={a.signed}; Signature={a.sig}")),
    Case("authz/empty-signed-headers", "malformed_authorization",
         reauth(lambda a, c: f"{a.scheme} Access={a.ak}, SignedHeaders=, Signature={a.sig}")),
    Case("authz/signed-headers-uppercase", "malformed_authorization",
         reauth(lambda a, c: a.text(signed="Host;X-Sdk-Date"))),
    Case("authz/signed-headers-repeated-name", "malformed_authorization",
         reauth(lambda a, c: a.text(signed="host;host;x-sdk-date"))),
    Case("authz/signed-headers-empty-name", "malformed_authorization",
         reauth(lambda a, c: a.text(signed="host;;x-sdk-date"))),
    Case("authz/signed-headers-over-2048", "malformed_authorization",
         reauth(lambda a, c: a.text(signed="host;" + ";".join(f"x-h{i:04}" for i in range(400)) + ";x-sdk-date"))),
    Case("authz/access-key-with-slash", "malformed_authorization", reauth(lambda a, c: a.text(ak=a.ak + "/../x"))),
    Case("authz/access-key-200-chars", "malformed_authorization", reauth(lambda a, c: a.text(ak="A" * 200))),
    Case("authz/access-key-8kb", "malformed_authorization", reauth(lambda a, c: a.text(ak="A" * 8192))),
    Case("authz/access-key-non-ascii", "malformed_authorization", reauth(lambda a, c: a.text(ak=a.ak[:-1] + "é"))),
    Case("authz/credential-field-on-sdk-scheme", "malformed_authorization",
         reauth(lambda a, c: f"{a.scheme} Credential={a.ak}, SignedHeaders={a.signed}, Signature={a.sig}")),
    Case("authz/v11-credential-without-scope", "malformed_authorization",
         reauth(lambda a, c: f"V11-HMAC-SHA256 Credential={a.ak}, SignedHeaders={a.signed}, Signature={a.sig}")),
    Case("authz/v11-scope-date-mismatch", "credential_scope_mismatch",
         reauth(lambda a, c: f"V11-HMAC-SHA256 Credential={a.ak}/19990101/cn-north-4/modelarts, "
                             f"SignedHeaders={a.signed}, Signature={a.sig}")),
    Case("authz/sigv4-short-credential", "malformed_authorization",
         reauth(lambda a, c: f"AWS4-HMAC-SHA256 Credential={a.ak}/{today()}/x, "
                             f"SignedHeaders=host;x-amz-date, Signature={a.sig}")),
    Case("authz/sigv4-without-date", "missing_date",
         reauth(lambda a, c: f"AWS4-HMAC-SHA256 Credential={a.ak}/{today()}/cn-north-4/modelarts/aws4_request, "
                             f"SignedHeaders=host;x-amz-date, Signature={a.sig}")),
    Case("authz/sigv4-garbled-date-header", "bad_date",
         reauth(lambda a, c: f"AWS4-HMAC-SHA256 Credential={a.ak}/{today()}/cn-north-4/modelarts/aws4_request, "
                             f"SignedHeaders=date;host, Signature={a.sig}",
                base=lambda c: signed(c).add("Date", "not a date"))),
    Case("authz/ecdsa-short-signature", "malformed_authorization",
         reauth(lambda a, c: f"SDK-ECDSA-P256-SHA256 Access={a.ak}, SignedHeaders={a.signed}, Signature=abcd")),
    # --- duplicated Authorization headers ------------------------------------------------------------------
    Case("authz-dup/identical-twice", "malformed_authorization",
         lambda c: signed(c).pipe(lambda r: r.add("Authorization", r.get("Authorization")))),
    Case("authz-dup/valid-then-bearer", "malformed_authorization",
         lambda c: signed(c).add("Authorization", "Bearer abc.def.ghi")),
    Case("authz-dup/bearer-then-valid", "unsupported_scheme",
         lambda c: signed(c).pipe(
             lambda r: r.set("Authorization", "Bearer abc").add("Authorization", r.get("Authorization")))),
    Case("authz-dup/two-users", "malformed_authorization",
         lambda c: signed(c).add("Authorization", signed(c, who="admin").get("Authorization"))),
    # --- unknown or missing scheme -------------------------------------------------------------------------
    Case("scheme/lowercase-name", "unsupported_scheme", reauth(lambda a, c: a.text(scheme=a.scheme.lower()))),
    Case("scheme/bearer", "unsupported_scheme", header("Authorization", "Bearer eyJhbGciOiJub25lIn0.e30.")),
    Case("scheme/basic", "unsupported_scheme", header("Authorization", "Basic YWRtaW46YWRtaW4=")),
    Case("scheme/digest", "unsupported_scheme", header("Authorization", 'Digest username="admin", nonce="x"')),
    Case("scheme/aws-v2", "unsupported_scheme", header("Authorization", "AWS AKIDEXAMPLE:frJIUN8DYpKDtOLCwo//yllq=")),
    Case("scheme/unknown-algorithm", "unsupported_scheme", reauth(lambda a, c: a.text(scheme="SDK-HMAC-MD5"))),
    Case("scheme/tab-after-name", "unsupported_scheme",
         reauth(lambda a, c: f"{a.scheme}\tAccess={a.ak}, SignedHeaders={a.signed}, Signature={a.sig}")),
    Case("scheme/presigned-name-in-header", "malformed_authorization",
         reauth(lambda a, c: f"AWS4-HMAC-SHA256-PRESIGNED Credential={a.ak}, SignedHeaders=host, Signature={a.sig}")),
    Case("scheme/x-auth-token-alone", "invalid_token", lambda c: plain(c).add("X-Auth-Token", "MIIEhQYJKoZIhvcN")),
    Case("scheme/x-auth-token-twice", "invalid_token",
         lambda c: plain(c).add("X-Auth-Token", "MIIE1").add("X-Auth-Token", "MIIE2")),
    # --- IAM tokens ------------------------------------------------------------------------------------------
    Case("token/alg-none", "invalid_token", lambda c: plain(c).add("X-Auth-Token", token(c, alg_none=True))),
    Case("token/foreign-key", "invalid_token", lambda c: plain(c).add("X-Auth-Token", token(c, foreign=True))),
    Case("token/tampered-user", "invalid_token", lambda c: plain(c).add("X-Auth-Token", token(c, tamper=True))),
    Case("token/expired", "token_expired", lambda c: plain(c).add("X-Auth-Token", token(c, age=2 * 86400))),
    Case("token/other-project", "token_scope_mismatch",
         lambda c: plain(c).add("X-Auth-Token", token(c, project=c.world.other_project))),
    Case("token/domain-scoped-for-a-project", "token_scope_mismatch",
         lambda c: plain(c).add("X-Auth-Token", token(c, project=None))),
    Case("missing/no-credentials", "missing_credentials", plain),
    Case("missing/date-but-no-authorization", "missing_credentials",
         lambda c: signed(c).drop("Authorization")),
    Case("missing/http-1.0-without-host", "missing_credentials",
         lambda c: replace(plain(c), headers=[], version="HTTP/1.0")),
    # --- two credentials -------------------------------------------------------------------------------------
    Case("two-creds/authorization+presigned-query", "multiple_credentials",
         lambda c: signed(c).pipe(lambda r: replace(r, target=r.target + "?" + presigned(c).target.split("?")[1]))),
    Case("two-creds/authorization+x-amz-credential", "multiple_credentials",
         lambda c: signed(c, query=f"X-Amz-Credential={c.world.scientist.access}%2F{today()}%2Fr%2Fs%2Faws4_request")),
    Case("two-creds/authorization+encoded-x-amz-signature-key", "multiple_credentials",
         lambda c: signed(c, query="X-Amz-%53ignature=" + HEX64)),
    Case("two-creds/x-auth-token+authorization", "multiple_credentials",
         lambda c: signed(c).add("X-Auth-Token", "MIIEhQYJKoZIhvcN")),
    Case("two-creds/empty-x-auth-token+authorization", "multiple_credentials",
         lambda c: signed(c).add("X-Auth-Token", "")),
    Case("two-creds/x-auth-token+presigned-query", "multiple_credentials",
         lambda c: presigned(c).add("X-Auth-Token", "MIIEhQYJKoZIhvcN")),
    # --- presigned URLs ----------------------------------------------------------------------------------------
    Case("presigned/bad-signature", "signature_mismatch",
         lambda c: presigned(c, edit=set_field("X-Amz-Signature", flip))),
    Case("presigned/unknown-access-key", "signature_mismatch",
         lambda c: presigned(c, who=Key("AKNOTKNOWN0123456789", "s" * 40))),
    Case("presigned/expired", "presigned_url_expired", lambda c: presigned(c, at=time.time() - 7200, expires=60)),
    Case("presigned/dated-in-the-future", "date_out_of_window", lambda c: presigned(c, at=time.time() + 7200)),
    Case("presigned/repeated-date", "malformed_authorization",
         lambda c: presigned(c, edit=repeat_field("X-Amz-Date"))),
    Case("presigned/missing-signed-headers", "malformed_authorization",
         lambda c: presigned(c, edit=drop_field("X-Amz-SignedHeaders"))),
    Case("presigned/wrong-algorithm", "malformed_authorization",
         lambda c: presigned(c, edit=set_field("X-Amz-Algorithm", "AWS4-HMAC-SHA1"))),
    Case("presigned/expires-zero", "malformed_authorization",
         lambda c: presigned(c, edit=set_field("X-Amz-Expires", "0"))),
    Case("presigned/expires-over-7-days", "malformed_authorization",
         lambda c: presigned(c, edit=set_field("X-Amz-Expires", "604801"))),
    Case("presigned/signature-uppercase", "malformed_authorization",
         lambda c: presigned(c, edit=set_field("X-Amz-Signature", str.upper))),
    Case("presigned/credential-date-mismatch", "credential_scope_mismatch",
         lambda c: presigned(c, edit=set_field("X-Amz-Credential", lambda v: re.sub(r"/\d{8}/", "/19990101/", v)))),
    Case("presigned/garbled-date", "bad_date", lambda c: presigned(c, edit=set_field("X-Amz-Date", "yesterday"))),
    Case("presigned/host-not-signed", "header_not_signed",
         lambda c: presigned(c, edit=set_field("X-Amz-SignedHeaders", "x-amz-date"))),
    # --- X-Sdk-Date ------------------------------------------------------------------------------------------
    Case("date/missing", "missing_date", lambda c: signed(c).drop("X-Sdk-Date")),
    Case("date/garbled", "bad_date", header("X-Sdk-Date", "yesterday")),
    Case("date/without-z", "bad_date", header("X-Sdk-Date", "20240101T000000")),
    Case("date/hour-25", "bad_date", header("X-Sdk-Date", "20240101T250000Z")),
    Case("date/month-13", "bad_date", header("X-Sdk-Date", "20241301T000000Z")),
    Case("date/unicode-digits", "bad_date", header("X-Sdk-Date", "٢٠٢٤٠١٠١T000000Z")),
    Case("date/latin1-bytes", "bad_date", header("X-Sdk-Date", b"2024\xff101T000000Z")),
    Case("date/empty", "bad_date", header("X-Sdk-Date", "")),
    Case("date/rfc1123", "bad_date", header("X-Sdk-Date", "Mon, 01 Jan 2024 00:00:00 GMT")),
    Case("date/repeated-header", "bad_date",
         lambda c: signed(c).pipe(lambda r: r.add("X-Sdk-Date", r.get("X-Sdk-Date")))),
    Case("date/stale-1h", "date_out_of_window", lambda c: signed(c, at=time.time() - 3600)),
    Case("date/future-1h", "date_out_of_window", lambda c: signed(c, at=time.time() + 3600)),
    Case("date/epoch", "date_out_of_window", header("X-Sdk-Date", "19700101T000000Z")),
    Case("date/year-9999", "date_out_of_window", header("X-Sdk-Date", "99991231T235959Z")),
    Case("date/shifted-1s", "signature_mismatch", lambda c: signed(c, at=time.time() - 5).set(
        "X-Sdk-Date", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 4)))),
    # --- access keys and signatures --------------------------------------------------------------------------
    Case("key/unknown-access-key", "signature_mismatch",
         lambda c: signed(c, who=Key("AKNOTKNOWN0123456789", "x" * 40))),
    Case("key/other-users-access-key", "signature_mismatch",
         reauth(lambda a, c: a.text(ak=c.world.admin.access))),
    Case("sig/wrong-secret", "signature_mismatch",
         lambda c: signed(c, who=Key(c.world.scientist.access, "x" * len(c.world.scientist.secret)))),
    Case("sig/one-hex-flipped", "signature_mismatch", reauth(lambda a, c: a.text(sig=flip(a.sig)))),
    Case("sig/all-zero", "signature_mismatch", reauth(lambda a, c: a.text(sig="0" * 64))),
    Case("sig/method-changed", "signature_mismatch", lambda c: replace(signed(c, "GET", NB1), method="DELETE")),
    Case("sig/path-changed", "signature_mismatch",
         lambda c: replace(signed(c, "GET", NB1), target=c.path("/v1/{p}/notebooks/nb-2"))),
    Case("sig/query-added", "signature_mismatch", lambda c: signed(c).pipe(
        lambda r: replace(r, target=r.target + "?limit=1000"))),
    Case("sig/body-changed", "signature_mismatch", lambda c: replace(job(c, {"kind": "job"}), body=b'{"kind":"jog"}')),
    Case("sig/host-changed", "signature_mismatch", header("Host", "evil.example")),
    Case("sig/signed-header-value-changed", "signature_mismatch",
         lambda c: signed(c, headers={"X-Language": "en-us"}).set("X-Language", "zh-cn")),
    Case("sig/body-digest-mismatch", "body_digest_mismatch",
         lambda c: signed(c, "POST", JOBS, body=b'{"kind":"job"}',
                          headers={"X-Sdk-Content-Sha256": hashlib.sha256(b"{}").hexdigest()})),
    Case("sig/streaming-payload-claimed", "unsupported_payload",
         lambda c: signed(c, "POST", JOBS, body=b'{"kind":"job"}',
                          headers={"X-Sdk-Content-Sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"})),
    Case("sig/security-token-signed", "invalid_security_token", lambda c: signed(c, security_token="forged-token")),
    # --- headers listed as signed ----------------------------------------------------------------------------
    Case("signed-hdr/security-token-not-signed", "header_not_signed",
         lambda c: signed(c).add("X-Security-Token", "forged-token")),
    Case("signed-hdr/date-not-signed", "header_not_signed", reauth(lambda a, c: a.text(signed="host"))),
    Case("signed-hdr/host-not-signed", "header_not_signed", reauth(lambda a, c: a.text(signed="x-sdk-date"))),
    Case("signed-hdr/content-type-absent", "signed_header_missing",
         lambda c: job(c, {"kind": "job"}).drop("Content-Type")),
    Case("signed-hdr/x-project-id-absent", "signed_header_missing",
         lambda c: signed(c, headers={"X-Project-Id": c.world.project}).drop("X-Project-Id")),
    Case("signed-hdr/made-up-header-listed", "signed_header_missing",
         reauth(lambda a, c: a.text(signed="host;x-ghost;x-sdk-date"))),
    # --- invalid percent-encoding and UTF-8 in the path ------------------------------------------------------
    Case("path-enc/pct-zz", "invalid_encoding", at_path(NB + "/%zz")),
    Case("path-enc/pct-c3-28", "invalid_encoding", at_path(NB + "/%c3%28")),
    Case("path-enc/lone-pct", "invalid_encoding", at_path(NB + "/%")),
    Case("path-enc/truncated-pct", "invalid_encoding", at_path(NB + "/nb%4")),
    Case("path-enc/pct-ff", "invalid_encoding", at_path(NB + "/%ff")),
    Case("path-enc/overlong-slash", "invalid_encoding", at_path(NB + "/%c0%af")),
    Case("path-enc/utf16-surrogate", "invalid_encoding", at_path(NB + "/%ed%a0%80")),
    Case("path-enc/truncated-utf8", "invalid_encoding", at_path(NB + "/%e2%82")),
    Case("path-enc/in-project-segment", "invalid_encoding", at_path("/v1/%zz/notebooks")),
    Case("path-enc/unsigned", "invalid_encoding", at_path(NB + "/%c3%28", sign=False)),
    # --- dot segments ----------------------------------------------------------------------------------------
    Case("path-dot/dotdot", "ambiguous_path", at_path("/v1/{p}/../{p}/notebooks")),
    Case("path-dot/dot", "ambiguous_path", at_path("/v1/{p}/./notebooks")),
    Case("path-dot/pct2e-pct2e", "ambiguous_path", at_path("/v1/{p}/%2e%2e/{p}/notebooks")),
    Case("path-dot/pct2E-pct2e", "ambiguous_path", at_path("/v1/{p}/%2E%2e/{p}/notebooks")),
    Case("path-dot/dot-pct2e", "ambiguous_path", at_path("/v1/{p}/.%2e/{p}/notebooks")),
    Case("path-dot/pct2e-dot", "ambiguous_path", at_path("/v1/{p}/%2e./{p}/notebooks")),
    Case("path-dot/single-pct2e", "ambiguous_path", at_path("/v1/{p}/%2e/notebooks")),
    Case("path-dot/trailing-dotdot", "ambiguous_path", at_path(NB + "/..")),
    Case("path-dot/leading-dotdot", "ambiguous_path", at_path("/../v1/{p}/notebooks")),
    Case("path-dot/encoded-dot-in-name", "ambiguous_path", at_path(NB + "/nb%2e1")),
    Case("path-dot/unsigned", "ambiguous_path", at_path("/v1/{p}/../{p}/notebooks", sign=False)),
    # --- encoded slashes -------------------------------------------------------------------------------------
    Case("path-slash/pct2F-in-id", "ambiguous_path", at_path(NB + "/nb%2F1")),
    Case("path-slash/pct2f-in-id", "ambiguous_path", at_path(NB + "/nb%2f1")),
    Case("path-slash/pct5C-backslash", "ambiguous_path", at_path(NB + "/nb%5C1")),
    Case("path-slash/between-project-and-route", "ambiguous_path", at_path("/v1/{p}%2Fnotebooks")),
    Case("path-slash/traversal-in-id", "ambiguous_path", at_path(NB + "/nb%2F..%2F..%2Fadmin")),
    # --- ; path parameters ------------------------------------------------------------------------------------
    Case("path-semi/after-literal", "ambiguous_path", at_path(NB + ";jsessionid=1")),
    Case("path-semi/in-project", "ambiguous_path", at_path("/v1/{p};x=1/notebooks")),
    Case("path-semi/in-id", "ambiguous_path", at_path(NB + "/nb-1;a=b")),
    Case("path-semi/dotdot-semicolon", "ambiguous_path", at_path("/v1/{p}/..;/notebooks")),
    # --- NUL and control characters --------------------------------------------------------------------------
    Case("path-ctl/nul", "ambiguous_path", at_path(NB + "/nb%00")),
    Case("path-ctl/lf", "ambiguous_path", at_path(NB + "/nb%0a")),
    Case("path-ctl/crlf-header-injection", "ambiguous_path", at_path(NB + "/nb%0d%0aX-Authmw-User-Name:%20admin")),
    Case("path-ctl/tab", "ambiguous_path", at_path(NB + "/nb%09")),
    Case("path-ctl/del", "ambiguous_path", at_path(NB + "/nb%7f")),
    Case("path-ctl/escape", "ambiguous_path", at_path(NB + "/nb%1b[31m")),
    Case("path-ctl/nul-in-project", "ambiguous_path", at_path("/v1/{p}%00/notebooks")),
    # --- oversized bodies ------------------------------------------------------------------------------------
    Case("size/declared-over-max", "body_too_large",
         lambda c: replace(signed(c, "POST", JOBS), framing=b"", content_length=str(MAX_BODY + 1))),
    # 10^20 - 1 does not fit in 64 bits: httptools refuses the Content-Length itself.
    Case("size/declared-huge", "body_too_large",
         lambda c: replace(signed(c, "POST", JOBS), framing=b"", content_length="9" * 20),
         server=frozenset({"httptools"})),
    Case("size/sent-over-max", "body_too_large",
         lambda c: replace(signed(c, "POST", JOBS), body=b"x" * (MAX_BODY + 1))),
    Case("size/signed-over-max", "body_too_large", lambda c: job(c, b'{"pad":"' + b"x" * MAX_BODY + b'"}')),
    Case("size/chunked-over-max", "body_too_large", lambda c: chunked_job(c, MAX_BODY + 100, 8192)),
    Case("size/chunked-many-small-chunks", "body_too_large", lambda c: chunked_job(c, MAX_BODY + 1, 1024)),
    Case("size/declared-over-max-expect-100-continue", "body_too_large",
         lambda c: replace(signed(c, "POST", JOBS), framing=b"", content_length=str(MAX_BODY + 1)).add(
             "Expect", "100-continue")),
    Case("size/over-max-on-get", "body_too_large", lambda c: replace(signed(c), body=b"x" * (MAX_BODY + 1))),
    # --- bad Content-Length (uvicorn's parsers refuse it first; werkzeug hands it to authmw) ------------------
    Case("clen/not-a-number", "malformed_request",
         lambda c: replace(signed(c, "POST", JOBS), framing=b"", content_length="abc"), server=UVICORN),
    Case("clen/negative", "malformed_request",
         lambda c: replace(signed(c, "POST", JOBS), framing=b"", content_length="-1"), server=UVICORN),
    Case("clen/hex", "malformed_request",
         lambda c: replace(signed(c, "POST", JOBS), framing=b"", content_length="0x10"), server=UVICORN),
    # --- conflicting workspaces ------------------------------------------------------------------------------
    Case("ws-conflict/query-vs-header", "conflicting_workspace",
         lambda c: signed(c, query=f"workspace_id={c.world.internal_ws}", headers={"X-Workspace-Id": "0"})),
    Case("ws-conflict/query-vs-body", "conflicting_workspace",
         lambda c: job(c, {"workspace_id": "0"}, query=f"workspace_id={c.world.internal_ws}")),
    Case("ws-conflict/header-vs-body", "conflicting_workspace",
         lambda c: signed(c, "POST", JOBS, body=json.dumps({"workspace_id": "0"}).encode(),
                          headers={"Content-Type": "application/json", "X-Workspace-Id": c.world.internal_ws})),
    Case("ws-conflict/repeated-query-key", "conflicting_workspace",
         lambda c: signed(c, query=f"workspace_id={c.world.internal_ws}&workspace_id=0")),
    Case("ws-conflict/workspace_id-vs-workspaceId", "conflicting_workspace",
         lambda c: signed(c, query=f"workspace_id={c.world.internal_ws}&workspaceId=0")),
    Case("ws-conflict/encoded-underscore-key", "conflicting_workspace",
         with_encoded_query(lambda w: f"workspace_id={w.internal_ws}&workspace_id=0",
                            lambda w: f"workspace%5Fid={w.internal_ws}&workspace_id=0")),
    Case("ws-conflict/u-escaped-body-key-vs-query", "conflicting_workspace",
         lambda c: job(c, b'{"\\u0077orkspace_id": "0"}', query=f"workspace_id={c.world.internal_ws}")),
    Case("ws-conflict/chunked-body-vs-query", "conflicting_workspace",
         lambda c: job(c, {"workspace_id": "0"}, query=f"workspace_id={c.world.internal_ws}").pipe(
             lambda r: r.chunked([r.body[:5], r.body[5:12], r.body[12:]]))),
    Case("ws-conflict/body-after-whitespace-vs-query", "conflicting_workspace",
         lambda c: job(c, b'\r\n\t {"workspace_id": "0"}', query=f"workspace_id={c.world.internal_ws}")),
    Case("ws-conflict/u-escaped-body-value-vs-header", "conflicting_workspace",
         lambda c: signed(c, "POST", JOBS, body=b'{"workspace_id": "\\u0030"}',
                          headers={"Content-Type": "application/json", "X-Workspace-Id": c.world.internal_ws})),
    # Headers added after signing: the pipeline reads them, so they must be signed.
    Case("ws-conflict/repeated-header", "header_not_signed",
         lambda c: signed(c).add("X-Workspace-Id", c.world.internal_ws).add("X-Workspace-Id", "0")),
    # The query key spelled entirely in %-escapes: parse_qsl (and every app framework) reads workspace_id.
    Case("ws-conflict/fully-encoded-query-key", "workspace_denied",
         with_encoded_query(lambda w: f"workspace_id={w.private_ws}",
                            lambda w: f"{encoded_key('workspace_id')}={w.private_ws}")),
    Case("ws-conflict/fully-encoded-workspaceId-key", "workspace_denied",
         with_encoded_query(lambda w: f"workspaceId={w.private_ws}",
                            lambda w: f"{encoded_key('workspaceId')}={w.private_ws}")),
    # A JSON body the app's json.loads reads (it detects a UTF-8 BOM and UTF-16): read it, or refuse it.
    Case("ws-conflict/utf8-bom-body", ("workspace_denied", "malformed_body"),
         lambda c: job(c, b"\xef\xbb\xbf" + json.dumps({"workspace_id": c.world.private_ws}).encode())),
    Case("ws-conflict/utf16-body", ("workspace_denied", "malformed_body"),
         lambda c: job(c, json.dumps({"workspace_id": c.world.private_ws}).encode("utf-16-le"))),
    # --- malformed workspace ids -----------------------------------------------------------------------------
    Case("ws-id/uppercase-hex", "invalid_workspace_id", ws_query(lambda w: w.internal_ws.upper())),
    Case("ws-id/31-chars", "invalid_workspace_id", ws_query(lambda w: w.internal_ws[:31])),
    Case("ws-id/33-chars", "invalid_workspace_id", ws_query(lambda w: w.internal_ws + "0")),
    Case("ws-id/default", "invalid_workspace_id", ws_query("default")),
    Case("ws-id/dotdot-zero", "invalid_workspace_id", ws_query("../0")),
    Case("ws-id/empty", "invalid_workspace_id", ws_query("")),
    Case("ws-id/double-zero", "invalid_workspace_id", ws_query("00")),
    Case("ws-id/non-hex", "invalid_workspace_id", ws_query("g" * 32)),
    Case("ws-id/trailing-newline", "invalid_workspace_id", ws_query("0\n")),
    Case("ws-id/trailing-nul", "invalid_workspace_id", ws_query("0\x00")),
    Case("ws-id/fullwidth-zero", "invalid_workspace_id", ws_query("\uff10")),
    Case("ws-id/workspaceId-alias", "invalid_workspace_id", ws_query("default", key="workspaceId")),
    Case("ws-id/header-uppercase", "invalid_workspace_id", ws_header(lambda w: w.internal_ws.upper())),
    Case("ws-id/header-31-chars", "invalid_workspace_id", ws_header(lambda w: w.internal_ws[:31])),
    Case("ws-id/header-8kb", "invalid_workspace_id", ws_header("0" * 8192)),
    Case("ws-id/body-integer", "invalid_workspace_id", ws_body(0)),
    Case("ws-id/body-null", "invalid_workspace_id", ws_body(None)),
    Case("ws-id/body-list", "invalid_workspace_id", ws_body(["0"])),
    Case("ws-id/body-uppercase", "invalid_workspace_id", ws_body(lambda w: w.internal_ws.upper())),
    Case("ws-id/body-u-escaped-key-invalid", "invalid_workspace_id", lambda c: job(c, b'{"workspace\\u005fid": "x"}')),
    Case("ws-id/body-lone-surrogate", "invalid_workspace_id", lambda c: job(c, b'{"workspace_id": "\\ud800"}')),
    Case("ws/another-domains-workspace", "workspace_not_found", ws_query(lambda w: w.foreign_ws)),
    Case("ws/unknown-workspace", "workspace_not_found", ws_query("f" * 32)),
    Case("ws/private-workspace", "workspace_denied", ws_header(lambda w: w.private_ws)),
    # --- JSON bodies naming the workspace --------------------------------------------------------------------
    Case("body/duplicate-workspace-key", "malformed_body",
         lambda c: job(c, f'{{"workspace_id": "0", "workspace_id": "{c.world.internal_ws}"}}'.encode())),
    Case("body/duplicate-key-same-value", "malformed_body",
         lambda c: job(c, b'{"workspace_id": "0", "workspace_id": "0"}')),
    Case("body/u-escaped-duplicate-key", "malformed_body",
         lambda c: job(c, f'{{"workspace_id": "0", "\\u0077orkspace_id": "{c.world.private_ws}"}}'.encode())),
    Case("body/invalid-json", "malformed_body", lambda c: job(c, b'{"workspace_id": "0",')),
    Case("body/trailing-garbage", "malformed_body", lambda c: job(c, b'{"workspace_id": "0"} {"workspace_id": 1}')),
    Case("body/single-quotes", "malformed_body", lambda c: job(c, b"{'workspace_id': '0'}")),
    Case("body/bad-u-escape", "malformed_body", lambda c: job(c, b'{"name": "\\uZZZZ"}')),
    Case("body/deep-nesting", "malformed_body", lambda c: job(c, deep_json())),
    Case("body/duplicate-body-action-key", "malformed_body",
         lambda c: signed(c, "PUT", SERVICE, body=b'{"status": "running", "status": "stopped"}',
                          headers={"Content-Type": "application/json"})),
    # --- projects --------------------------------------------------------------------------------------------
    Case("project/unknown-in-path", "project_not_found", lambda c: signed(c, project="e" * 32)),
    Case("project/another-domains-project", "project_not_found", lambda c: signed(c, project=c.world.other_project)),
    Case("project/uppercase-in-path", "project_not_found", lambda c: signed(c, project=c.world.project.upper())),
    Case("project/overlong-in-path", "project_not_found", lambda c: signed(c, project="a" * 100)),
    Case("project/other-domains-user", "project_not_found", lambda c: signed(c, who="stranger")),
    Case("project/header-conflicts-with-path", "conflicting_project",
         lambda c: signed(c, headers={"X-Project-Id": c.world.other_project})),
    Case("project/header-differs-in-case", "conflicting_project",
         lambda c: signed(c, headers={"X-Project-Id": c.world.project.upper()})),
    Case("project/header-repeated", "header_not_signed",
         lambda c: signed(c).add("X-Project-Id", c.world.project).add("X-Project-Id", c.world.project)),
    Case("project/header-8kb", "header_not_signed", lambda c: signed(c).add("X-Project-Id", "a" * 8192)),
    # --- routes ----------------------------------------------------------------------------------------------
    Case("route/unknown-api", "route_not_allowed", lambda c: signed(c, "POST", "/v2/{p}/no-such-api")),
    Case("route/unknown-api-unsigned", "route_not_allowed", lambda c: plain(c, "POST", "/v2/{p}/no-such-api")),
    # httptools knows a fixed list of methods (RFC 9110's and WebDAV's) and refuses any other itself.
    Case("route/unknown-method", "route_not_allowed", lambda c: signed(c, "BREW"), server=frozenset({"httptools"})),
    Case("route/options", "route_not_allowed", lambda c: signed(c, "OPTIONS")),
    Case("route/root", "route_not_allowed", lambda c: signed(c, "GET", "/")),
    Case("route/double-slash-inside", "ambiguous_path", lambda c: signed(c, "GET", "/v1//{p}/notebooks")),
    Case("route/double-trailing-slash", "ambiguous_path", lambda c: signed(c, "GET", NB + "//")),
    Case("route/uppercase-version", "route_not_allowed", lambda c: signed(c, "GET", "/V1/{p}/notebooks")),
    Case("route/suffix", "route_not_allowed", lambda c: signed(c, "GET", NB + ".json")),
    # --- spoofed identity headers ----------------------------------------------------------------------------
    Case("spoof/identity-headers-without-credentials", "missing_credentials", lambda c: spoofed(plain(c), c.world)),
    Case("spoof/identity-headers-bad-signature", "signature_mismatch",
         lambda c: spoofed(reauth(lambda a, _c: a.text(sig=flip(a.sig)))(c), c.world)),
    Case("spoof/identity-headers-unknown-scheme", "unsupported_scheme",
         lambda c: spoofed(plain(c).add("Authorization", "Authmw admin"), c.world)),
    Case("spoof/assertion-without-credentials", "missing_credentials",
         lambda c: plain(c).add("X-Authmw-Assertion", "eyJhbGciOiJFZERTQSJ9.eyJ1c2VyLW5hbWUiOiJhZG1pbiJ9.c2ln")),
    Case("spoof/identity-on-denied-action", "action_denied", lambda c: spoofed(signed(c, "DELETE", JOB1), c.world)),
    Case("spoof/x-forwarded-for-walled-user", "address_not_allowed",
         lambda c: signed(c, who="walled").add("X-Forwarded-For", "192.0.2.10")),
    Case("spoof/forwarded-walled-user", "address_not_allowed",
         lambda c: signed(c, who="walled").add("Forwarded", "for=192.0.2.10")),
    Case("spoof/x-real-ip-walled-user", "address_not_allowed",
         lambda c: signed(c, who="walled").add("X-Real-Ip", "192.0.2.10")),
    # --- protocol level ----------------------------------------------------------------------------------------
    # Sent to authz as it is (no path to put behind the check prefix): not a check request.
    Case("protocol/asterisk-target", "malformed_request", lambda c: replace(signed(c), target="*"),
         per_server={"authz": "forbidden"}),
    # "X-Sd\u212a-Date" lower-cases to x-sdk-date. uvicorn's parsers refuse the name; werkzeug's header parser
    # stops at it.
    Case("protocol/non-ascii-header-name", "malformed_request",
         lambda c: plain(c).add("X-Sd\u212a-Date", "20240101T000000Z"), server=UVICORN,
         per_server={"werkzeug": "missing_credentials"}),
    # Absolute-form: h11 hands the whole URL over as the path (refused as a target authmw cannot read);
    # httptools, werkzeug and Envoy take the path out of it (RFC 9112 §3.2.2), so authmw checks it and finds the
    # bad signature (the app routes on that same path: the authority is not read, the Host header is signed).
    Case("protocol/absolute-form-target", "malformed_request",
         lambda c: reauth(lambda a, _c: a.text(sig=flip(a.sig)))(c).pipe(
             lambda r: replace(r, target=f"http://{c.host}{r.target}")),
         per_server=dict.fromkeys(("werkzeug", "httptools", "authz"), "signature_mismatch")),
    Case("protocol/nul-in-header-value", "bad_date", header("X-Sdk-Date", "20240101\x00000000Z"), server=UVICORN),
    # RFC 9112 §3.2: both are a 400. h11 refuses them itself; httptools hands them on (werkzeug joins two Host
    # headers into one value), and authmw refuses them.
    Case("protocol/duplicated-host", "malformed_request", lambda c: signed(c).add("Host", "evil.example"),
         server=H11),
    # Signed over both (their canonical value is the two joined): the signature holds, the Host headers do not.
    Case("protocol/duplicated-host-both-signed", "malformed_request",
         lambda c: signed(c, headers={"Host": f"{c.host},evil.example"}).pipe(
             lambda r: r.set("Host", c.host).add("Host", "evil.example")),
         server=H11),
    Case("protocol/http-1.1-without-host", "malformed_request", lambda c: replace(plain(c), headers=[]), server=H11),
    Case("protocol/header-over-64kb", "missing_credentials", lambda c: plain(c).add("X-Pad", "p" * 70_000),
         server=frozenset({"werkzeug"})),
    Case("protocol/150-headers", "missing_credentials",
         lambda c: replace(plain(c), headers=[("Host", c.host), *((f"X-H{i}", "v") for i in range(150))]),
         server=frozenset({"werkzeug"})),
    Case("protocol/garbage-request-line", "malformed_request",
         lambda c: replace(plain(c), method="\x16\x03\x01", target="\x00\x01"), server=ALL),
    Case("protocol/space-in-target", "malformed_request", lambda c: plain(c, "GET", NB + "/a b"), server=ALL),
    # A body that ends early (broken chunk framing, or the client stops short of its Content-Length) after a
    # prefix that verifies: the app must never be handed the truncated body as if it were complete.
    Case("protocol/broken-chunk-after-signed-prefix", "malformed_request",
         lambda c: replace(signed(c, "POST", JOBS, body=b"hello"), framing=b"5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n")
         .add("Transfer-Encoding", "chunked"), server=ALL),
    Case("protocol/body-shorter-than-content-length", "malformed_request",
         lambda c: replace(signed(c, "POST", JOBS, body=None), body=b"hello", content_length="100", half_close=True),
         server=ALL),
    Case("protocol/truncated-chunk-unsigned-payload", "malformed_request",
         lambda c: replace(signed(c, "POST", JOBS, body=None),
                           framing=b"5\r\nhello\r\n-3\r\nabc\r\n0\r\n\r\n").add("Transfer-Encoding", "chunked"),
         server=ALL),
]  # fmt: skip


# -- the tests --------------------------------------------------------------------------------------------------


def test_the_suite_has_enough_distinct_cases() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert sum(1 for case in CASES if not case.server) >= 100  # answered by authmw in every form
    for case in CASES:
        for code in (*case.expected("h11"), *case.per_server.values()):
            assert code in STATUS and 400 <= STATUS[code] < 500, code


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(signed, id="signed-get"),
        pytest.param(lambda c: job(c, {"kind": "job", "workspace_id": c.world.internal_ws}), id="signed-post-json"),
        pytest.param(presigned, id="presigned-get"),
        pytest.param(lambda c: chunked_job(c, MAX_BODY - 10, 4096), id="chunked-just-under-max"),
        pytest.param(lambda c: signed(c, query=f"workspace_id={c.world.internal_ws}"), id="workspace-query"),
    ],
)
def test_the_intact_request_reaches_the_app(target: Target, build: Callable[[Ctx], Raw]) -> None:
    """The baseline of the corruptions below: uncorrupted, each request is let through exactly once."""
    before = target.calls.count
    reply = send(target, build(Ctx(target.world, target.host)))
    assert reply.status == 200, reply.body[:300]
    assert target.calls.count == before + 1


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_with_its_code(target: Target, case: Case) -> None:
    before = target.calls.count
    reply = send(target, case.build(Ctx(target.world, target.host)))
    refusing = target.server in case.server  # the server may refuse it itself
    unanswered = reply.status == 0 and refusing  # the server hung up: allowed for those
    assert unanswered or (reply.status != 500 and 400 <= reply.status < 500), (reply.status, reply.body[:300])
    assert b"Traceback" not in reply.body and b'File "' not in reply.body
    is_authmw = reply.headers.get("content-type") == "application/json"
    if unanswered or (refusing and not is_authmw):
        assert unanswered or reply.status in SERVER_STATUSES[target.server], (reply.status, reply.body[:300])
        # The server refused it: once the servers handle no request, an app they started has been counted.
        wait_idle(target.form.url)
        if target.form.upstream is not None:
            wait_idle(target.form.upstream)
    else:
        body = reply.json()
        assert set(body) == {"error_code", "error_msg", "request_id"}
        assert body["error_code"] in case.expected("authz" if target.name == "authz" else target.server), body
        assert reply.status == STATUS[body["error_code"]]
        assert body["error_msg"] == MESSAGE[body["error_code"]]  # generic, never an echo of the input
        assert body["request_id"], "every refusal carries a request id (SPEC §9)"
        assert reply.headers.get("x-authmw-request-id") == body["request_id"]
        if reply.status == 401:
            assert reply.headers.get("www-authenticate", "").startswith("SDK-HMAC-SHA256")
    assert target.calls.count == before, "the app was called for a refused request"


# -- no request is ever read out of a refused request's body ---------------------------------------------------


def keep_alive(raw: Raw) -> bytes:
    """``raw`` on the wire without its ``Connection: close``: the server may read a next request after it."""
    data = raw.encode()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.removesuffix(b"\r\nConnection: close") + b"\r\n\r\n" + body


def stranger_post(c: Ctx) -> Raw:
    """A POST signed with an access key nobody has: refused on its head, before its body is read."""
    return signed(c, "POST", JOBS, body=None, who=Key("UNKNOWNACCESSKEY0000", "not-a-secret"))


def statuses_in(received: bytes) -> list[int]:
    """The statuses of the responses in ``received``, one after another (each framed by its Content-Length, or
    chunked)."""
    statuses = []
    while received:
        head, found, rest = received.partition(b"\r\n\r\n")
        assert found and head.startswith(b"HTTP/1."), received[:300]
        statuses.append(int(head[9:12]))
        length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
        if length is not None:
            received = rest[int(length.group(1)) :]
        else:  # chunked: up to the last chunk (no trailers here)
            assert re.search(rb"(?im)^transfer-encoding:\s*chunked\s*$", head), head
            received = rest.partition(b"\r\n0\r\n\r\n")[2] if not rest.startswith(b"0\r\n") else rest[5:]
    return statuses


def answered_with_close(received: bytes) -> bool:
    """Whether ``received`` holds a complete response (framed as in :func:`statuses_in`) with ``Connection:
    close``."""
    while received:
        head, found, rest = received.partition(b"\r\n\r\n")
        if not found:
            return False
        length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
        if length is not None:
            if len(rest) < int(length.group(1)):
                return False
            received = rest[int(length.group(1)) :]
        elif rest.startswith(b"0\r\n\r\n"):
            received = rest[5:]
        else:
            _, end, received = rest.partition(b"\r\n0\r\n\r\n")
            if not end:
                return False
        if re.search(rb"(?im)^connection:\s*close\s*$", head):
            return True
    return False


SMUGGLERS: dict[str, Callable[[Ctx, bytes], Raw]] = {
    # 401 on the head, the body left unread
    "refused-before-its-body": lambda c, inner: replace(stranger_post(c), body=inner),
    "chunked-refused-before-its-body": lambda c, inner: stranger_post(c).chunked([inner]),
    # 413 on the declared length, the body left unread
    "declared-over-max": lambda c, inner: replace(
        signed(c, "POST", JOBS, body=None), body=inner + b"x" * (MAX_BODY + 1 - len(inner))
    ),
    # 401 once the body is read and the signature checked
    "refused-after-its-body": lambda c, inner: reauth(lambda a, _c: a.text(sig=flip(a.sig)))(c).pipe(
        lambda r: replace(r, method="POST", body=inner)
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("smuggler", list(SMUGGLERS), ids=list(SMUGGLERS))
def test_a_refused_requests_body_is_never_read_as_a_request(target: Target, smuggler: str) -> None:
    """A refused request whose body is a complete signed request, then a good request, on one keep-alive
    connection: the server frames the body by its length or chunks whether or not authmw read it, so the request
    inside it never reaches the app (a desync would answer it: three answers, two calls). The server may close the
    connection after the refusal instead (the good request is then unanswered)."""
    c = Ctx(target.world, target.host)
    checked = as_checked if target.name == "authz" else (lambda raw: raw)
    inner = keep_alive(checked(signed(c, "GET", NB1)))
    outer = checked(SMUGGLERS[smuggler](c, inner))
    after = checked(signed(c)).encode()
    before = target.calls.count
    received = b""
    with socket.create_connection(target.address, timeout=5) as sock:
        sock.sendall(keep_alive(outer) + after)
        half_closed = False
        try:
            while chunk := sock.recv(65536):
                received += chunk
                if not half_closed and answered_with_close(received):
                    # The server will read no next request; werkzeug still drains the connection until its end
                    # (a blocking read: without the end it waits out this socket's timeout). Whatever the server
                    # sends until it closes is still read.
                    sock.shutdown(socket.SHUT_WR)
                    half_closed = True
        except ConnectionResetError:
            pass
        except TimeoutError:  # werkzeug leaves the connection open a while after its "Connection: close"
            assert re.search(rb"(?i)\r\nconnection: close\r\n", received.rpartition(b"HTTP/1.")[2]), received[-300:]
    statuses = statuses_in(received)
    assert statuses and 400 <= statuses[0] < 500, received[:600]
    assert statuses[1:] in ([], [200]), statuses
    wait_idle(target.form.url)
    assert target.calls.count - before == statuses.count(200), "the request inside the body reached the app"
