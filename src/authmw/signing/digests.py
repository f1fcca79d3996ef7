"""Hash and MAC primitives of the signing schemes (SHA-256 and the Chinese national SM3)."""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["SHA256", "SM3", "Digest", "sm3_available"]


def sm3_available() -> bool:
    """SM3 comes from OpenSSL 3; builds without it cannot offer the SM3 and SM2 schemes."""
    return "sm3" in hashlib.algorithms_available


@dataclass(frozen=True, slots=True)
class Digest:
    """A hash function as the schemes use it: hex digest, HMAC and the digest of an empty body."""

    name: str
    empty: str
    new: Callable[[bytes], Any]

    def hex(self, data: bytes) -> str:
        return self.new(data).hexdigest()  # type: ignore[no-any-return]

    def raw(self, data: bytes) -> bytes:
        return self.new(data).digest()  # type: ignore[no-any-return]

    def mac(self, key: bytes, message: bytes) -> bytes:
        return hmac.digest(key, message, self.name)


SHA256 = Digest("sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", hashlib.sha256)
SM3 = Digest(
    "sm3",
    "1ab21d8355cfa17f8e61194831e81a8f22bec8c728fefb747ed035eb5082aa2b",
    functools.partial(hashlib.new, "sm3"),
)
