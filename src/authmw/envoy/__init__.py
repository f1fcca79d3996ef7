"""Envoy in front: ``authmw authz`` answers Envoy's HTTP external authorization checks, and
``authmw envoy-config`` writes the Envoy bootstrap that asks it (see adapters/envoy/)."""

from authmw.envoy.app import CHECK_PREFIX, AuthzApp
from authmw.envoy.bootstrap import bootstrap
from authmw.envoy.server import build_authz, serve_authz

__all__ = ["CHECK_PREFIX", "AuthzApp", "bootstrap", "build_authz", "serve_authz"]
