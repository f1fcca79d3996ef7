"""authmw: cloud-grade authentication and access control for Python web apps.

``open_guard(store_url)`` builds the :class:`Guard` every form runs (``authmw.asgi``, ``authmw.wsgi``, the sidecar);
``Guard.check(Request)`` answers an :class:`AuthContext` or raises an :class:`AuthmwError` (``authmw.errors``).
"""

from typing import TYPE_CHECKING

from authmw._lazy import lazy_names

if TYPE_CHECKING:
    from authmw.assembly import open_guard
    from authmw.errors import AuthmwError, ConfigurationError
    from authmw.guard import Guard
    from authmw.models import AccessKey, AuthContext, AuthMethod, Credential, Request
    from authmw.policy import Decision
    from authmw.routes import Access, Route, RouteCatalog, Routes

__version__ = "0.1.0"

__all__ = [
    "Access",
    "AccessKey",
    "AuthContext",
    "AuthMethod",
    "AuthmwError",
    "ConfigurationError",
    "Credential",
    "Decision",
    "Guard",
    "Request",
    "Route",
    "RouteCatalog",
    "Routes",
    "__version__",
    "open_guard",
]

# The names load on first use (PEP 562): sshd runs `python -m authmw ssh authorized-keys` on every login attempt,
# and that path must not pay for the whole pipeline's imports.
_HOMES = {
    "open_guard": "authmw.assembly",
    "AuthmwError": "authmw.errors",
    "ConfigurationError": "authmw.errors",
    "Guard": "authmw.guard",
    "AccessKey": "authmw.models",
    "AuthContext": "authmw.models",
    "AuthMethod": "authmw.models",
    "Credential": "authmw.models",
    "Request": "authmw.models",
    "Decision": "authmw.policy",
    "Access": "authmw.routes",
    "Route": "authmw.routes",
    "RouteCatalog": "authmw.routes",
    "Routes": "authmw.routes",
}


__getattr__, __dir__ = lazy_names(__name__, _HOMES)
