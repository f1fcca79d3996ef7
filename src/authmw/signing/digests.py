"""Hash and MAC primitives of the signing schemes (SHA-256 and the Chinese national SM3)."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
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

    def mac(self, key: bytes | str, message: bytes) -> bytes:
        """HMAC (RFC 2104) from the key's cached inner and outer states: OpenSSL 3's one-shot HMAC spends more
        on setup than on hashing a short string to sign. Keys recur (a few per client), so the cache pays.
        A ``str`` key is used as its UTF-8 bytes (a secret key as stored, hashed once per string)."""
        inner, outer = _pads(self.name, key)
        inner = inner.copy()
        inner.update(message)
        outer = outer.copy()
        outer.update(inner.digest())
        return outer.digest()  # type: ignore[no-any-return]


@lru_cache(maxsize=1024)
def _pads(name: str, key: bytes | str) -> tuple[Any, Any]:
    block = 64  # SHA-256 and SM3 both use 64-byte blocks
    if isinstance(key, str):
        key = key.encode()
    if len(key) > block:
        key = hashlib.new(name, key).digest()
    key = key.ljust(block, b"\0")
    return hashlib.new(name, bytes(b ^ 0x36 for b in key)), hashlib.new(name, bytes(b ^ 0x5C for b in key))


SHA256 = Digest("sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", hashlib.sha256)
SM3 = Digest(
    "sm3",
    "1ab21d8355cfa17f8e61194831e81a8f22bec8c728fefb747ed035eb5082aa2b",
    functools.partial(hashlib.new, "sm3"),
)
