"""Sign outgoing requests to authmw-protected services: an ``httpx.Auth`` and a ``requests`` auth.

``HttpxAuth`` needs the ``client`` extra (httpx); ``RequestsAuth`` needs nothing beyond requests itself.
Both sign with any scheme of :data:`authmw.signing.SCHEMES` through :func:`authmw.signing.sign_request`.
:mod:`authmw.client.jwks` is the other outgoing client: it fetches external OIDC issuers' key sets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from authmw._lazy import lazy_names
from authmw.client._common import SigningConfig
from authmw.client._requests import RequestsAuth

if TYPE_CHECKING:
    from authmw.client._httpx import HttpxAuth

__all__ = ["HttpxAuth", "RequestsAuth", "SigningConfig"]


# HttpxAuth is imported on first use, so requests users need not install httpx.
__getattr__, __dir__ = lazy_names(__name__, {"HttpxAuth": "authmw.client._httpx"})
