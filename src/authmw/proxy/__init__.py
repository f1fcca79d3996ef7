"""The sidecar reverse proxy (``authmw proxy``): the pipeline in front of an upstream in any language."""

from authmw.proxy.app import ProxyApp, identity_headers
from authmw.proxy.server import build_app, serve

__all__ = ["ProxyApp", "build_app", "identity_headers", "serve"]
