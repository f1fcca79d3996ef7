"""The signing conformance vectors of tests/data/conformance, turned back into raw HTTP/1.1 requests."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.support.tokens import OneToken

DATA = Path(__file__).resolve().parents[1] / "data"  # carried by the repo: it stands alone
SIGNING = DATA / "conformance" / "signing"
AWS4_SUITE = DATA / "conformance" / "aws4_testsuite"


@dataclass(frozen=True)
class Vector:
    record: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.record["id"])

    @property
    def signed_at(self) -> float:
        return datetime.fromisoformat(self.record["signed_at"].replace("Z", "+00:00")).timestamp()

    @property
    def keys(self) -> dict[str, str]:
        return {self.record["access_key"]: self.record["secret_key"]}

    @property
    def debug(self) -> dict[str, str | None]:
        return self.record.get("debug") or {}

    def wire(self) -> bytes:
        """The request as it went over the wire: latin-1 header bytes, chunked framing restored."""
        url = urlsplit(self.record["url"])
        target = url.path + (f"?{url.query}" if url.query else "")
        body = base64.b64decode(self.record["body_b64"])
        lines = [f"{self.record['method']} {target} HTTP/1.1".encode("latin-1")]
        chunked = False
        for name, value in self.record["headers"]:
            chunked |= name.lower() == "transfer-encoding" and "chunked" in value.lower()
            lines.append(name.encode("latin-1") + b": " + value.encode("latin-1"))
        if chunked:
            body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


def vector_tokens(vector: Vector) -> OneToken:
    """Security-token resolver for a vector: accepts exactly its token, bound to its access key."""
    return OneToken(vector.record["security_token"], vector.record["access_key"], vector.record["secret_key"])


def load(name: str) -> Iterator[Vector]:
    with (SIGNING / name).open(encoding="utf-8") as lines:
        for line in lines:
            yield Vector(json.loads(line))
