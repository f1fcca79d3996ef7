"""authmw: cloud-grade authentication and access control for Python web apps."""

from authmw.errors import AuthmwError, ConfigurationError
from authmw.models import AccessKey, AuthMethod, Credential, Request

__version__ = "0.1.0"

__all__ = ["AccessKey", "AuthMethod", "AuthmwError", "ConfigurationError", "Credential", "Request", "__version__"]
