"""The scheme registry: registry name → implementation."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from authmw.signing.base import Scheme
from authmw.signing.digests import SHA256, SM3, sm3_available
from authmw.signing.huawei import HuaweiDerived, HuaweiEcdsa, HuaweiHmac, HuaweiSm2
from authmw.signing.sigv4 import SigV4, SigV4Presigned

__all__ = ["SCHEMES"]


def _build() -> Mapping[str, Scheme]:
    schemes: list[Scheme] = [
        HuaweiHmac("SDK-HMAC-SHA256", SHA256, "x-sdk-content-sha256"),
        HuaweiDerived(),
        HuaweiEcdsa(),
        SigV4(),
        SigV4Presigned(),
    ]
    if sm3_available():
        schemes += [HuaweiHmac("SDK-HMAC-SM3", SM3, "x-sdk-content-sm3"), HuaweiSm2()]
    return MappingProxyType({scheme.name: scheme for scheme in schemes})


#: Every scheme this build supports, by registry name.
SCHEMES: Mapping[str, Scheme] = _build()
