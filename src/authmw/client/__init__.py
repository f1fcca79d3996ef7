"""Sign outgoing requests to authmw-protected services: an ``httpx.Auth`` and a ``requests`` auth.

``HttpxAuth`` needs the ``client`` extra (httpx); ``RequestsAuth`` needs nothing beyond requests itself.
Both sign with any scheme of :data:`authmw.signing.SCHEMES` through :func:`authmw.signing.sign_request`.
:mod:`authmw.client.jwks` is the other outgoing client: it fetches external OIDC issuers' key sets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from authmw.client._common import SigningConfig
from authmw.client._requests import RequestsAuth

if TYPE_CHECKING:
    from authmw.client._httpx import HttpxAuth

__all__ = ["HttpxAuth", "RequestsAuth", "SigningConfig"]


def __getattr__(name: str) -> Any:
    if name == "HttpxAuth":  # imported lazily so requests users need not install httpx
        from authmw.client._httpx import HttpxAuth

        return HttpxAuth
    raise AttributeError(name)
