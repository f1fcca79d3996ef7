"""AK/SK request signatures: verification, client signing and the shared canonicalisation steps."""

from typing import TYPE_CHECKING

from authmw._lazy import lazy_names

if TYPE_CHECKING:
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

# The names load on first use (PEP 562): the replay window alone (authmw.signing.replay) is what the shared state
# needs, which every `authmw` command touching the store opens; the schemes and the verifier are the pipeline's.
_HOMES = {
    "Scheme": "authmw.signing.base",
    "SignedParts": "authmw.signing.base",
    "SCHEMES": "authmw.signing.registry",
    "ReplayGuard": "authmw.signing.replay",
    "SignedHttpRequest": "authmw.signing.signer",
    "presign_url": "authmw.signing.signer",
    "sign_request": "authmw.signing.signer",
    "Inspection": "authmw.signing.verifier",
    "KeySource": "authmw.signing.verifier",
    "SecurityTokenResolver": "authmw.signing.verifier",
    "StaticKeys": "authmw.signing.verifier",
    "Verifier": "authmw.signing.verifier",
}


__getattr__, __dir__ = lazy_names(__name__, _HOMES)
