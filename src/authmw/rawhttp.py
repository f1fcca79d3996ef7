"""Read a raw HTTP/1.1 request (as captured on the wire or written by hand) into a :class:`Request`.

Lenient where debugging needs it: bare LF line endings, unencoded spaces or UTF-8 in the request-target,
obsolete header folding, a missing final blank line, absolute-form targets. The chunked transfer coding is
removed; ``Content-Length`` is honoured.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from authmw.errors import MalformedRequest
from authmw.models import Request

__all__ = ["parse_raw_request"]

_METHOD = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+").fullmatch
_HEX = re.compile(rb"[0-9a-fA-F]{1,15}").fullmatch


def _lines_and_body(data: bytes) -> tuple[list[bytes], bytes]:
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, body = data.partition(separator)
        if found and (separator == b"\r\n\r\n" or b"\r\n\r\n" not in data):
            break
    else:
        head, body = data, b""
    return [line.rstrip(b"\r") for line in head.split(b"\n")], body


def _dechunk(body: bytes) -> bytes:
    out: list[bytes] = []
    pos = 0
    while True:
        end = body.find(b"\n", pos)
        if end < 0:
            raise MalformedRequest("chunked body truncated")
        size = body[pos:end].rstrip(b"\r").split(b";", 1)[0].strip()
        if not _HEX(size):
            raise MalformedRequest("bad chunk size")
        length = int(size, 16)
        pos = end + 1
        if length == 0:
            return b"".join(out)  # trailers, if any, are not part of the entity body
        chunk = body[pos : pos + length]
        if len(chunk) != length:
            raise MalformedRequest("chunked body truncated")
        out.append(chunk)
        pos += length
        pos += 2 if body[pos : pos + 2] == b"\r\n" else 1


def parse_raw_request(data: bytes, *, client: str | None = None) -> Request:
    """Parse ``data``; raises :class:`MalformedRequest` for anything that is not an HTTP request."""
    if b"\n" not in data and not data.strip():
        raise MalformedRequest("empty request")
    lines, body = _lines_and_body(data.lstrip(b"\r\n"))
    request_line = lines[0]
    method, _, rest = request_line.partition(b" ")
    target, _, version = rest.rstrip().rpartition(b" ")
    if not version.startswith(b"HTTP/"):
        target, version = rest.strip(), b"HTTP/1.1"
    if not _METHOD(method) or not target:
        raise MalformedRequest("bad request line")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            if not headers:
                raise MalformedRequest("continuation line before any header")
            name, value = headers[-1]
            headers[-1] = (name, value + b" " + line.strip(b" \t"))
            continue
        name, colon, value = line.partition(b":")
        if not colon or not _METHOD(name):
            raise MalformedRequest("bad header line")
        headers.append((name, value.strip(b" \t")))
    lowered = {name.lower(): value for name, value in headers}
    if b"chunked" in lowered.get(b"transfer-encoding", b"").lower():
        body = _dechunk(body)
    elif b"content-length" in lowered:
        length = lowered[b"content-length"].strip()
        if not (length.isascii() and length.isdigit()) or len(length) > 15 or int(length) > len(body):
            raise MalformedRequest("Content-Length does not match the body")
        body = body[: int(length)]
    if b"#" in target:  # urlsplit would cut it off, and servers disagree on it: refused as Request.build does
        raise MalformedRequest("a request-target has no fragment")
    if not target.startswith(b"/"):
        try:
            absolute = urlsplit(target.decode("utf-8", "surrogateescape"))
        except ValueError:  # e.g. a malformed IPv6 literal
            raise MalformedRequest("bad absolute-form target") from None
        if not absolute.scheme or not absolute.netloc:
            raise MalformedRequest("request-target must be origin-form or absolute-form")
        # RFC 9112 §3.2.2: the authority of an absolute-form target replaces any Host header.
        headers = [(name, value) for name, value in headers if name.lower() != b"host"]
        headers.append((b"Host", absolute.netloc.encode("utf-8", "surrogateescape")))
        target = (absolute.path or "/").encode("utf-8", "surrogateescape") + (
            b"?" + absolute.query.encode("utf-8", "surrogateescape") if absolute.query else b""
        )
    try:
        return Request.build(method.decode("ascii"), target, headers, body, client)
    except UnicodeError:
        raise MalformedRequest("undecodable request") from None
