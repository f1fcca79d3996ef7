"""Raw HTTP/1.1 requests exactly as the real signing clients put them on the wire.

Tests feed these bytes to authmw's verifier, so nothing here re-implements a signer: every request is
built, signed and sent by huaweicloudsdkcore or botocore themselves, over plain HTTP, to a
:class:`CaptureServer` on 127.0.0.1 that keeps the bytes it received.

Observed with huaweicloudsdkcore 3.1.219 (requests 2.34 / urllib3 2.8) and botocore 1.44.8:

* Huawei SDK: ``requests`` adds the unsigned ``Accept-Encoding: gzip, deflate``, ``Accept: */*``,
  ``Connection: keep-alive`` and ``Content-Length`` (also ``Content-Length: 0`` for an empty POST body);
  an iterable body goes out with ``Transfer-Encoding: chunked``.  The wire query is the SDK's canonical
  query (sorted, ``quote(safe='~')``, ``True`` -> ``true``, lists expanded, ``None`` dropped).  The path is
  re-quoted by requests (space -> ``%20``, non-ASCII -> UTF-8 ``%XX``, ``%7E`` -> ``~``) and urllib3
  removes ``.``/``..`` segments that the SDK signed.  Header values are stripped (inner runs of spaces
  kept) and sent as raw UTF-8.
* botocore ``URLLib3Session``: urllib3 puts ``Host`` first and adds ``Accept-Encoding: identity`` and
  ``User-Agent: python-urllib3/<version>`` (both unsigned); path and query go out verbatim.
* botocore S3 client over plain http with the default ``request_checksum_calculation='when_supported'``:
  PutObject is *not* aws-chunked (the ``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` form is https-only).  It
  sends ``Content-Length``, ``Expect: 100-continue``, signed ``x-amz-checksum-crc32`` and
  ``x-amz-sdk-checksum-algorithm: CRC32`` headers, and ``X-Amz-Content-SHA256`` = SHA-256 of the body
  (payload signing is forced on insecure transports); no ``Content-MD5``.  GetObject adds a signed
  ``x-amz-checksum-mode: ENABLED``; ListObjectsV2 adds ``encoding-type=url`` (query left unsorted);
  DeleteObject sends ``Content-Length: 0``.  ``amz-sdk-invocation-id`` (random) and ``amz-sdk-request``
  come after ``Authorization`` and are *not* signed; ``User-Agent`` is never signed.
* ``SigV4QueryAuth`` keeps only the first value of a repeated query key.

Signing time: :func:`frozen_time` patches the clocks the two signers read (see its docstring).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Protocol, Self
from unittest import mock

import botocore.auth
import botocore.compat
import botocore.config
import botocore.credentials
import botocore.exceptions
import botocore.httpsession
import botocore.parsers
import botocore.session
import botocore.signers
import huaweicloudsdkcore.signer.signer
from botocore.awsrequest import AWSRequest
from huaweicloudsdkcore.auth.credentials import BasicCredentials, Credentials, GlobalCredentials
from huaweicloudsdkcore.client import Client, ClientBuilder
from huaweicloudsdkcore.exceptions.exceptions import ServiceResponseException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkcore.region.region import Region
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.algorithm import SigningAlgorithm

__all__ = [
    "HUAWEI_SIGNERS",
    "CaptureServer",
    "RawRequest",
    "botocore_wire",
    "frozen_time",
    "huawei_wire",
    "parse_raw",
    "presigned_url_query_auth",
    "presigned_url_s3",
    "s3_client_wire",
]

_CRLF: Final = b"\r\n"
_RESPONSE_BODY: Final = b"{}"
_RESPONSE: Final = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(_RESPONSE_BODY)).encode() + b"\r\n"
    b"Connection: close\r\n"
    b"\r\n" + _RESPONSE_BODY
)
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_CLIENT_TIMEOUT: Final = 10.0

# --------------------------------------------------------------------------- framing


class _Reader(Protocol):
    def line(self) -> bytes: ...

    def exact(self, n: int) -> bytes: ...


class _IncompleteRequestError(ValueError):
    """The peer stopped (or stalled) before a full request arrived."""


class _SocketReader:
    """Reads from a socket while keeping every received byte in :attr:`raw`.

    The whole request must arrive within ``timeout`` seconds, so a trickling peer cannot hold a thread.
    """

    def __init__(self, sock: socket.socket, *, limit: int, timeout: float) -> None:
        self._sock = sock
        self._limit = limit
        self._deadline = time.monotonic() + timeout
        self.raw = bytearray()
        self._pos = 0

    def _fill(self) -> None:
        if len(self.raw) >= self._limit:
            raise _IncompleteRequestError("request exceeds the capture limit")
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request not complete before the read deadline")
        self._sock.settimeout(remaining)
        data = self._sock.recv(65536)
        if not data:
            raise _IncompleteRequestError("connection closed mid-request")
        self.raw += data

    def line(self) -> bytes:
        while (end := self.raw.find(_CRLF, self._pos)) < 0:
            self._fill()
        start, self._pos = self._pos, end + 2
        return bytes(self.raw[start:end])

    def exact(self, n: int) -> bytes:
        while len(self.raw) - self._pos < n:
            self._fill()
        start, self._pos = self._pos, self._pos + n
        return bytes(self.raw[start : self._pos])

    @property
    def consumed(self) -> bytes:
        return bytes(self.raw[: self._pos])


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def line(self) -> bytes:
        end = self._data.find(_CRLF, self._pos)
        if end < 0:
            raise _IncompleteRequestError("missing CRLF")
        start, self._pos = self._pos, end + 2
        return self._data[start:end]

    def exact(self, n: int) -> bytes:
        if len(self._data) - self._pos < n:
            raise _IncompleteRequestError("truncated data")
        start, self._pos = self._pos, self._pos + n
        return self._data[start : self._pos]


def _read_head(reader: _Reader) -> list[tuple[str, str]]:
    """Consume the request line and header block; return headers (latin-1, wire order)."""
    reader.line()
    headers: list[tuple[str, str]] = []
    while line := reader.line():
        name, sep, value = line.partition(b":")
        if not sep:
            raise _IncompleteRequestError("malformed header line")
        headers.append((name.decode("latin-1").strip(), value.decode("latin-1").strip()))
    return headers


def _is_chunked(headers: Sequence[tuple[str, str]]) -> bool:
    codings = [c.strip().lower() for n, v in headers if n.lower() == "transfer-encoding" for c in v.split(",")]
    return bool(codings) and codings[-1] == "chunked"


def _content_length(headers: Sequence[tuple[str, str]]) -> int:
    values = [v for n, v in headers if n.lower() == "content-length"]
    return int(values[0]) if values else 0


def _read_chunked(reader: _Reader) -> bytes:
    """Consume chunked framing up to and including the trailer section; return the decoded data."""
    data = bytearray()
    while True:
        size = int(reader.line().split(b";", 1)[0].strip(), 16)
        if size == 0:
            while reader.line():
                pass
            return bytes(data)
        data += reader.exact(size)
        if reader.exact(2) != _CRLF:
            raise _IncompleteRequestError("chunk not followed by CRLF")


@dataclasses.dataclass(frozen=True, slots=True)
class RawRequest:
    """A captured request split into parts; header values are latin-1 decoded wire bytes."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    """The message body exactly as framed on the wire (chunked framing kept)."""

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (case-insensitive), or None."""
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)

    def header_values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    @property
    def chunked(self) -> bool:
        return _is_chunked(self.headers)

    @property
    def entity_body(self) -> bytes:
        """The body with the HTTP chunked transfer coding removed (aws-chunked framing stays)."""
        return _read_chunked(_BytesReader(self.body)) if self.chunked else self.body

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]


def parse_raw(raw: bytes) -> RawRequest:
    """Split raw request bytes as captured by :class:`CaptureServer`."""
    head, sep, body = raw.partition(_CRLF + _CRLF)
    if not sep:
        raise ValueError("no end of header block")
    request_line = head.split(_CRLF, 1)[0].decode("latin-1")
    method, target, version = request_line.split(" ", 2)
    headers = _read_head(_BytesReader(head + _CRLF + _CRLF))
    return RawRequest(method, target, version, tuple(headers), body)


# --------------------------------------------------------------------------- capture server


class _TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = False
    block_on_close = True

    def __init__(self, owner: CaptureServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(socketserver.BaseRequestHandler):
    server: _TCPServer
    request: socket.socket

    def handle(self) -> None:
        owner = self.server.owner
        reader = _SocketReader(self.request, limit=owner.max_request_bytes, timeout=owner.read_timeout)
        try:
            headers = _read_head(reader)
            chunked = _is_chunked(headers)
            length = _content_length(headers)
            expect = any(n.lower() == "expect" and v.lower() == "100-continue" for n, v in headers)
            if expect and (chunked or length):
                self.request.sendall(_CONTINUE)
            if chunked:
                _read_chunked(reader)
            elif length:
                reader.exact(length)
        except (OSError, ValueError) as exc:
            owner._record_failure(bytes(reader.raw), exc)
            return
        owner._record(reader.consumed)
        with contextlib.suppress(OSError):
            self.request.settimeout(owner.read_timeout)
            self.request.sendall(_RESPONSE)


class CaptureServer:
    """Plain-HTTP server on an ephemeral 127.0.0.1 port that records each raw request.

    One request per connection; it answers ``200`` with ``{}`` and closes.  Use as a context manager.
    """

    def __init__(self, *, read_timeout: float = 5.0, max_request_bytes: int = 64 * 1024 * 1024) -> None:
        self.read_timeout = read_timeout
        self.max_request_bytes = max_request_bytes
        self.captured: list[bytes] = []
        self.failures: list[tuple[bytes, Exception]] = []
        self._lock = threading.Lock()
        self._server: _TCPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> CaptureServer:
        self._server = _TCPServer(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="capture-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=self.read_timeout + 1)
        self._server = self._thread = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("CaptureServer is not running")
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    def last(self) -> bytes:
        with self._lock:
            if not self.captured:
                raise LookupError("no request captured")
            return self.captured[-1]

    def mark(self) -> int:
        """Position to pass to :meth:`since` to get only requests captured after this call."""
        with self._lock:
            return len(self.captured)

    def since(self, mark: int) -> bytes:
        """The first request captured after ``mark``."""
        with self._lock:
            if len(self.captured) <= mark:
                detail = f"; failures: {self.failures[-1][1]!r}" if self.failures else ""
                raise LookupError(f"no request captured{detail}")
            return self.captured[mark]

    def _record(self, raw: bytes) -> None:
        with self._lock:
            self.captured.append(raw)

    def _record_failure(self, raw: bytes, exc: Exception) -> None:
        with self._lock:
            self.failures.append((raw, exc))


# --------------------------------------------------------------------------- clocks


@contextlib.contextmanager
def frozen_time(dt: datetime.datetime) -> Iterator[None]:
    """Make botocore and huaweicloudsdkcore sign at ``dt`` (naive means UTC).

    botocore's signers read ``get_current_datetime()`` (imported by name into ``botocore.auth`` and
    ``botocore.signers`` from ``botocore.compat``); huaweicloudsdkcore's ``Signer`` calls
    ``datetime.utcnow()`` on the ``datetime`` class imported into ``huaweicloudsdkcore.signer.signer``.
    Both names are patched for the duration of the block (process-wide, so also in the SDK's worker
    thread).  Nothing else (``time.time``, urllib3, token expiry checks) is affected.
    """
    utc = dt.astimezone(datetime.UTC) if dt.tzinfo else dt.replace(tzinfo=datetime.UTC)
    naive = utc.replace(tzinfo=None)

    def current(remove_tzinfo: bool = True) -> datetime.datetime:
        return naive if remove_tzinfo else utc

    class _FrozenDatetime(datetime.datetime):
        @classmethod
        def utcnow(cls) -> Self:
            return cls.combine(naive.date(), naive.time())

        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> Self:
            local = utc.astimezone(tz) if tz else naive
            return cls.combine(local.date(), local.timetz())

    with contextlib.ExitStack() as stack:
        for module in (botocore.compat, botocore.auth, botocore.signers):
            stack.enter_context(mock.patch.object(module, "get_current_datetime", current))
        stack.enter_context(mock.patch.object(huaweicloudsdkcore.signer.signer, "datetime", _FrozenDatetime))
        yield


def _clock(at: datetime.datetime | None) -> contextlib.AbstractContextManager[None]:
    return frozen_time(at) if at is not None else contextlib.nullcontext()


# --------------------------------------------------------------------------- Huawei SDK

HUAWEI_SIGNERS: Final[Mapping[str, SigningAlgorithm]] = {
    "SDK-HMAC-SHA256": SigningAlgorithm.HMAC_SHA256,
    "SDK-HMAC-SM3": SigningAlgorithm.HMAC_SM3,
    "SDK-ECDSA-P256-SHA256": SigningAlgorithm.ECDSA_P256_SHA256,
    "SDK-SM2-SM3": SigningAlgorithm.SM2_SM3,
    # Derived signing is chosen by the credentials' predicate, not by the algorithm setting.
    "V11-HMAC-SHA256": SigningAlgorithm.HMAC_SHA256,
}
# Content types for which Client.build_future_request parses a model object instead of a str body.
_SDK_PARSED_CONTENT_TYPES: Final = frozenset(
    {
        "multipart/form-data",
        "application/x-www-form-urlencoded",
        "application/xml",
        "application/bson",
        "application/octet-stream",
    }
)


def _huawei_client(
    server: CaptureServer,
    *,
    signer: str,
    ak: str,
    sk: str,
    security_token: str | None,
    project_id: str | None,
    domain_id: str | None,
    region: str,
    service: str,
    ignore_content_type_for_get: bool,
) -> Client:
    """Build a generic SDK ``Client`` the way a generated service client's builder does."""
    try:
        algorithm = HUAWEI_SIGNERS[signer]
    except KeyError:
        raise ValueError(f"unknown Huawei signer {signer!r}") from None
    credentials: Credentials = (
        GlobalCredentials(ak, sk, domain_id) if domain_id is not None else BasicCredentials(ak, sk, project_id)
    )
    if security_token is not None:
        credentials.with_security_token(security_token)
    if signer == "V11-HMAC-SHA256":
        credentials.with_derived_predicate(lambda _request: True)
    config = HttpConfig(
        signing_algorithm=algorithm,
        timeout=(_CLIENT_TIMEOUT, _CLIENT_TIMEOUT),
        ignore_content_type_for_get_request=ignore_content_type_for_get,
    )
    builder: ClientBuilder[Any] = ClientBuilder(Client, f"{BasicCredentials.__name__},{GlobalCredentials.__name__}")
    builder.with_http_config(config).with_credentials(credentials)
    builder._with_derived_auth_service_name(service)
    # With a region the builder resolves a missing project/domain id through IAM (network); the
    # explicit-endpoint form skips that, so pass the derived-auth parameters as the builder would.
    has_id = domain_id is not None or project_id is not None
    if has_id:
        builder.with_region(Region(region, server.base_url))
    else:
        builder.with_endpoint(server.base_url)
    client: Client = builder.build()
    if not has_id:
        credentials._process_derived_auth_params(service, region)
    return client


def _huawei_signed_request(
    client: Client,
    *,
    method: str,
    path: str,
    path_params: Mapping[str, object] | None,
    query: Sequence[tuple[str, object]] | None,
    headers: Mapping[str, str] | None,
    body: bytes | str | Iterable[bytes] | None,
) -> SdkRequest:
    """Run the SDK's request building and signing; return the signed ``SdkRequest``."""
    header_params: dict[str, Any] = dict(headers or {})
    query_params: list[tuple[str, object]] = list(query or [])
    path_values: dict[str, Any] = dict(path_params or {})
    content_type = next((v for k, v in header_params.items() if k == "Content-Type"), "application/json")
    if body is None or (not isinstance(body, bytes) and content_type not in _SDK_PARSED_CONTENT_TYPES):
        # Exactly the service-client path (Client.do_http_request minus the response handling).
        future = client.build_future_request(
            method, path, path_values, query_params, header_params, body, None, None, None, {}, None
        )
        request: SdkRequest = future.result()
        return request
    # Raw bytes (which the SDK would try to JSON-serialise), or a body with a content type the SDK
    # would parse as a model: same steps as build_future_request, with the body passed through.
    config = client._config
    url = client._url_parse(None)
    header_params = client._parse_header_params({}, header_params)
    resource_path = client._parse_path_params({}, path_values, path, client.get_credentials().get_update_path_params())
    parsed_query = client._parse_query_params({}, query_params)
    if config.ignore_content_type_for_get_request and method == "GET" and not body:
        header_params.pop("Content-Type", None)
    else:
        header_params.setdefault("Content-Type", "application/json")
    sdk_request = SdkRequest(
        method=method,
        schema=url.scheme,
        host=url.netloc,
        resource_path=resource_path,
        query_params=parsed_query,
        header_params=header_params,
        body=body,
        stream=False,
        signing_algorithm=config.signing_algorithm,
    )
    signed: SdkRequest = client.get_credentials().process_auth_request(sdk_request, client.get_http_client()).result()
    return signed


def huawei_wire(
    server: CaptureServer,
    *,
    signer: str,
    method: str,
    path: str,
    query: list[tuple[str, object]] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | str | Iterable[bytes] | None = None,
    ak: str,
    sk: str,
    security_token: str | None = None,
    project_id: str | None = None,
    domain_id: str | None = None,
    region: str = "cn-north-4",
    service: str = "modelarts",
    path_params: Mapping[str, object] | None = None,
    ignore_content_type_for_get: bool = False,
    at: datetime.datetime | None = None,
) -> bytes:
    """Sign and send one request with huaweicloudsdkcore; return the raw bytes the server received.

    ``signer`` is a key of :data:`HUAWEI_SIGNERS`.  ``path`` may contain ``{name}`` templates filled
    from ``path_params`` (``quote(safe='')``) and ``{project_id}``/``{domain_id}`` from the
    credentials, as the SDK does.  ``domain_id`` selects ``GlobalCredentials`` (V11 region becomes
    ``globe``), otherwise ``BasicCredentials``.  The SDK adds ``User-Agent`` and, unless
    ``ignore_content_type_for_get`` applies, ``Content-Type: application/json``.  Sent with the SDK's
    own ``HttpClient.do_request_sync`` (a ``requests`` session).
    """
    with _clock(at):
        client = _huawei_client(
            server,
            signer=signer,
            ak=ak,
            sk=sk,
            security_token=security_token,
            project_id=project_id,
            domain_id=domain_id,
            region=region,
            service=service,
            ignore_content_type_for_get=ignore_content_type_for_get,
        )
        try:
            request = _huawei_signed_request(
                client,
                method=method,
                path=path,
                path_params=path_params,
                query=query,
                headers=headers,
                body=body,
            )
            mark = server.mark()
            client.get_http_client().do_request_sync(request)
        finally:
            client.close()
            client.get_http_client().executor.shutdown(wait=False)
    return server.since(mark)


# --------------------------------------------------------------------------- botocore

_BOTOCORE_AUTH: Final[Mapping[str, type[botocore.auth.SigV4Auth]]] = {
    "SigV4Auth": botocore.auth.SigV4Auth,
    "S3SigV4Auth": botocore.auth.S3SigV4Auth,
}


def _send_prepared(server: CaptureServer, request: AWSRequest) -> bytes:
    session = botocore.httpsession.URLLib3Session(timeout=int(_CLIENT_TIMEOUT))
    try:
        mark = server.mark()
        session.send(request.prepare())
    finally:
        session.close()
    return server.since(mark)


def botocore_wire(
    server: CaptureServer,
    *,
    auth: str,
    method: str,
    path_and_query: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    ak: str,
    sk: str,
    token: str | None = None,
    region: str = "cn-north-4",
    service: str = "modelarts",
    at: datetime.datetime | None = None,
) -> bytes:
    """Sign an ``AWSRequest`` with ``SigV4Auth``/``S3SigV4Auth``, send it with ``URLLib3Session``.

    ``path_and_query`` is appended verbatim to ``server.base_url``; botocore neither re-encodes nor
    reorders it on the wire.
    """
    try:
        auth_cls = _BOTOCORE_AUTH[auth]
    except KeyError:
        raise ValueError(f"unknown botocore auth {auth!r}") from None
    if not path_and_query.startswith("/"):
        raise ValueError("path_and_query must start with '/'")
    request = AWSRequest(method=method, url=server.base_url + path_and_query, headers=dict(headers or {}), data=body)
    credentials = botocore.credentials.Credentials(ak, sk, token)
    with _clock(at):
        auth_cls(credentials, service, region).add_auth(request)
    return _send_prepared(server, request)


def _s3_client(
    *,
    endpoint: str,
    ak: str,
    sk: str,
    token: str | None,
    region: str,
    config_kwargs: Mapping[str, Any] | None,
) -> Any:
    session = botocore.session.get_session()
    # Keep a developer's ~/.aws files from changing what the client sends.
    session.set_config_variable("config_file", os.devnull)
    session.set_config_variable("credentials_file", os.devnull)
    config = botocore.config.Config(
        s3={"addressing_style": "path"},
        retries={"total_max_attempts": 1},
        connect_timeout=_CLIENT_TIMEOUT,
        read_timeout=_CLIENT_TIMEOUT,
    )
    if config_kwargs:
        config = config.merge(botocore.config.Config(**config_kwargs))
    return session.create_client(
        "s3",
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id=ak,
        aws_secret_access_key=sk,
        aws_session_token=token,
        config=config,
    )


def s3_client_wire(
    server: CaptureServer,
    *,
    operation: str,
    params: dict[str, Any],
    ak: str,
    sk: str,
    token: str | None = None,
    region: str = "cn-north-4",
    config_kwargs: dict[str, Any] | None = None,
    at: datetime.datetime | None = None,
) -> bytes:
    """Call ``operation`` (e.g. ``put_object``) on a real botocore S3 client (path-style addressing).

    The capture server's ``{}`` reply is not S3 XML, so botocore may turn it into a parse error or (for
    non-streaming outputs such as PutObject) a 500 ``ClientError``; either is ignored once the request
    has been captured.  Retries are off unless ``config_kwargs`` turns them back on.
    """
    client = _s3_client(endpoint=server.base_url, ak=ak, sk=sk, token=token, region=region, config_kwargs=config_kwargs)
    call: Callable[..., Any] = getattr(client, operation)
    mark = server.mark()
    try:
        with _clock(at):
            call(**params)
    except (botocore.exceptions.ClientError, botocore.parsers.ResponseParserError):
        if server.mark() <= mark:
            raise
    finally:
        client.close()
    return server.since(mark)


# --------------------------------------------------------------------------- presigned URLs

_S3_PRESIGN_OPERATIONS: Final[Mapping[str, str]] = {
    "GET": "get_object",
    "PUT": "put_object",
    "HEAD": "head_object",
    "DELETE": "delete_object",
}


def presigned_url_s3(
    *,
    method: str,
    bucket: str,
    key: str,
    ak: str,
    sk: str,
    token: str | None = None,
    region: str = "cn-north-4",
    expires: int = 3600,
    endpoint: str,
    at: datetime.datetime | None = None,
) -> str:
    """A path-style presigned S3 object URL from the S3 client's ``generate_presigned_url``."""
    try:
        operation = _S3_PRESIGN_OPERATIONS[method.upper()]
    except KeyError:
        raise ValueError(f"no S3 object operation for method {method!r}") from None
    client = _s3_client(endpoint=endpoint, ak=ak, sk=sk, token=token, region=region, config_kwargs=None)
    try:
        with _clock(at):
            url: str = client.generate_presigned_url(
                operation, Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires, HttpMethod=method.upper()
            )
    finally:
        client.close()
    return url


def presigned_url_query_auth(
    *,
    method: str,
    url: str,
    ak: str,
    sk: str,
    token: str | None = None,
    region: str = "cn-north-4",
    service: str = "modelarts",
    expires: int = 3600,
    at: datetime.datetime | None = None,
) -> str:
    """``url`` presigned with ``botocore.auth.SigV4QueryAuth`` (generic, normalising SigV4)."""
    request = AWSRequest(method=method, url=url)
    credentials = botocore.credentials.Credentials(ak, sk, token)
    with _clock(at):
        botocore.auth.SigV4QueryAuth(credentials, service, region, expires=expires).add_auth(request)
    prepared_url: str = request.prepare().url
    return prepared_url


@dataclasses.dataclass(frozen=True)
class _Endpoint:
    base_url: str


def huawei_call(
    base_url: str,
    *,
    method: str,
    path: str,
    ak: str,
    sk: str,
    project_id: str | None = None,
    query: list[tuple[str, object]] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | str | None = None,
    signer: str = "SDK-HMAC-SHA256",
    path_params: Mapping[str, object] | None = None,
    security_token: str | None = None,
) -> Any:
    """Sign and send one request with huaweicloudsdkcore to a real server: ``(status, JSON body)``.

    ``{project_id}`` in ``path`` is filled by the SDK from the credentials, as a generated client does. An
    error answer is read the SDK's way (``ServiceResponseException`` parsed from the body), so its
    ``error_code``, ``error_msg`` and ``request_id`` are what the SDK found.
    """
    client = _huawei_client(
        _Endpoint(base_url),  # type: ignore[arg-type]
        signer=signer,
        ak=ak,
        sk=sk,
        security_token=security_token,
        project_id=project_id,
        domain_id=None,
        region="cn-north-4",
        service="modelarts",
        ignore_content_type_for_get=False,
    )
    try:
        request = _huawei_signed_request(
            client, method=method, path=path, path_params=path_params, query=query, headers=headers, body=body
        )
        try:
            response = client.get_http_client().do_request_sync(request)
        except ServiceResponseException as exc:
            return exc.status_code, {
                "error_code": exc.error_code,
                "error_msg": exc.error_msg,
                "request_id": exc.request_id,
            }
        return response.status_code, response.json()
    finally:
        client.close()
        client.get_http_client().executor.shutdown(wait=False)
