"""AK/SK request signatures: verification, client signing and the shared canonicalisation steps."""

from authmw.signing.base import Scheme, SignedParts
from authmw.signing.registry import SCHEMES
from authmw.signing.replay import ReplayGuard
from authmw.signing.signer import SignedHttpRequest, presign_url, sign_request
from authmw.signing.verifier import Inspection, KeySource, SecurityTokenResolver, StaticKeys, Verifier

__all__ = [
    "SCHEMES",
    "Inspection",
    "KeySource",
    "ReplayGuard",
    "Scheme",
    "SecurityTokenResolver",
    "SignedHttpRequest",
    "SignedParts",
    "StaticKeys",
    "Verifier",
    "presign_url",
    "sign_request",
]
