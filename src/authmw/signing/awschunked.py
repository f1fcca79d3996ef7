"""The ``aws-chunked`` content coding that botocore uses for ``STREAMING-UNSIGNED-PAYLOAD-TRAILER``.

The payload is not covered by the signature, but the framing, the declared decoded length and the trailing
checksum are still checked so a damaged upload is refused rather than passed on.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from collections.abc import Callable, Mapping

from authmw.errors import MalformedChunkedBody

__all__ = ["decode_aws_chunked", "verify_aws_chunked"]

_HEX_SIZE = re.compile(rb"[0-9a-fA-F]{1,15}").fullmatch

_CHECKSUMS: dict[str, Callable[[bytes], bytes]] = {
    "x-amz-checksum-crc32": lambda data: zlib.crc32(data).to_bytes(4, "big"),
    "x-amz-checksum-sha1": lambda data: hashlib.sha1(data).digest(),  # noqa: S324 - S3 checksum, not security
    "x-amz-checksum-sha256": lambda data: hashlib.sha256(data).digest(),
}


def decode_aws_chunked(body: bytes) -> tuple[bytes, dict[str, str]]:
    """Return the decoded payload and the trailers; :class:`MalformedChunkedBody` on any framing error."""
    chunks: list[bytes] = []
    pos = 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            raise MalformedChunkedBody("chunk header not terminated")
        size_text = body[pos:end].split(b";", 1)[0].strip()
        if not _HEX_SIZE(size_text):
            raise MalformedChunkedBody("bad chunk size")
        size = int(size_text, 16)
        pos = end + 2
        if size == 0:
            break
        data = body[pos : pos + size]
        if len(data) != size or body[pos + size : pos + size + 2] != b"\r\n":
            raise MalformedChunkedBody("chunk shorter than declared")
        chunks.append(data)
        pos += size + 2
    trailers: dict[str, str] = {}
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            raise MalformedChunkedBody("trailer not terminated")
        line = body[pos:end]
        pos = end + 2
        if not line:
            break
        name, sep, value = line.partition(b":")
        if not sep:
            raise MalformedChunkedBody("bad trailer line")
        trailers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    if pos != len(body):
        raise MalformedChunkedBody("data after the last chunk")
    return b"".join(chunks), trailers


def verify_aws_chunked(body: bytes, headers: Mapping[str, str]) -> bytes:
    """Decode ``body`` and check ``X-Amz-Decoded-Content-Length`` and the declared trailing checksum."""
    payload, trailers = decode_aws_chunked(body)
    declared = headers.get("x-amz-decoded-content-length")
    if declared is not None and declared.strip() != str(len(payload)):
        raise MalformedChunkedBody("decoded length differs from X-Amz-Decoded-Content-Length")
    for name in filter(None, (n.strip().lower() for n in headers.get("x-amz-trailer", "").split(","))):
        if name not in trailers:
            raise MalformedChunkedBody(f"declared trailer {name} missing")
        compute = _CHECKSUMS.get(name)
        if compute is not None and base64.b64encode(compute(payload)).decode() != trailers[name]:
            raise MalformedChunkedBody(f"{name} does not match the payload")
    return payload
