"""authmw: cloud-grade authentication and access control for Python web apps."""

from authmw.errors import AuthmwError, ConfigurationError
from authmw.guard import Guard
from authmw.models import AccessKey, AuthContext, AuthMethod, Credential, Request
from authmw.policy import Decision
from authmw.routes import Access, Route, RouteCatalog

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
    "__version__",
]
