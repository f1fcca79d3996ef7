"""authmw: cloud-grade authentication and access control for Python web apps.

``open_guard(store_url)`` builds the :class:`Guard` every form runs (``authmw.asgi``, ``authmw.wsgi``, the sidecar);
``Guard.check(Request)`` answers an :class:`AuthContext` or raises an :class:`AuthmwError` (``authmw.errors``).
"""

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
