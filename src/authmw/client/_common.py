"""What both HTTP-client adapters share: the signing configuration and the headers left unsigned."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from authmw.errors import ConfigurationError
from authmw.signing import SCHEMES, SignedHttpRequest, sign_request

__all__ = ["SigningConfig"]

# Transport headers an HTTP client or proxy may add or rewrite after signing; never signed.
_TRANSPORT = frozenset({"content-length", "connection", "accept-encoding", "transfer-encoding", "keep-alive"})


@dataclass(frozen=True, slots=True)
class SigningConfig:
    """Credentials and scheme for signing; validated once, when the auth object is built."""

    access_key: str
    secret_key: str = field(repr=False)
    scheme: str = "SDK-HMAC-SHA256"
    region: str | None = None
    service: str | None = None
    security_token: str | None = field(default=None, repr=False)
    unsigned_payload: bool = False
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        implementation = SCHEMES.get(self.scheme)
        if implementation is None or implementation.presigned:
            raise ConfigurationError(f"cannot sign requests with scheme {self.scheme!r}")
        if implementation.scoped and not (self.region and self.service):
            raise ConfigurationError(f"{self.scheme} needs region and service")
        if not self.access_key or not self.secret_key:
            raise ConfigurationError("access_key and secret_key are required")

    def sign(
        self, method: str, url: str, headers: Iterable[tuple[str, str]] | Mapping[str, str], body: bytes | None
    ) -> SignedHttpRequest:
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        to_sign = {name: value for name, value in pairs if name.lower() not in _TRANSPORT}
        return sign_request(
            method,
            url,
            to_sign,
            body,
            access_key=self.access_key,
            secret_key=self.secret_key,
            scheme=self.scheme,
            region=self.region,
            service=self.service,
            security_token=self.security_token,
            unsigned_payload=self.unsigned_payload,
            at=self.clock(),
        )
