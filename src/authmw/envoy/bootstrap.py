"""An Envoy v3 bootstrap that puts ``authmw authz`` in front of an upstream, runnable as is.

One listener; its HTTP connection manager appends the peer to ``X-Forwarded-For`` (``use_remote_address``) and
drops header names with ``_`` (WSGI servers fold them onto ``-`` names). The filters, in order: every client-sent
``X-Authmw-*`` header and the connection facts a client could forge (``X-Real-IP`` and the like) are removed;
``ext_authz`` sends the request (body included, up to ``body_limit`` bytes, 413 beyond) to authmw behind
:data:`~authmw.envoy.app.CHECK_PREFIX` and fails closed (503 when authmw does not answer); the router. An allowed
request goes upstream with authmw's ``X-Authmw-*`` headers; a refused one gets authmw's status and JSON error.
The token and security-token endpoints are routed to authmw, unchecked (they authenticate their own callers);
websockets are upgraded once their handshake is allowed.
Paths are neither normalised nor merged: authmw checks, and the upstream receives, the bytes the client sent.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from authmw.envoy.app import CHECK_PREFIX
from authmw.errors import ConfigurationError
from authmw.iam_api import SECURITY_TOKENS_PATH, TOKENS_PATH
from authmw.proxy.server import parse_listen

__all__ = ["bootstrap", "render"]

_EXT_AUTHZ = "envoy.filters.http.ext_authz"
_TYPES = "type.googleapis.com/envoy.extensions.filters"
#: What the refused client is told besides the status and body (the documented headers of ``errors.render``).
_CLIENT_HEADERS = ("content-type", "cache-control", "www-authenticate", "retry-after", "x-request-id")
#: Connection facts only a proxy may state: a client's own are removed before anyone reads them (Envoy states the
#: client's address in X-Forwarded-For only; an upstream reading Forwarded would believe the client).
_FORGEABLE = ("forwarded", "x-real-ip", "true-client-ip", "x-client-ip", "x-forwarded-host")


def _endpoint(url: str, option: str) -> tuple[str, str, int, bool]:
    """(host, scheme, port, tls) of an ``http://`` or ``https://`` URL with no path beyond ``/``."""
    split = urlsplit(url)
    try:
        port = split.port
    except ValueError:
        raise ConfigurationError(f"{option}: bad port in {url!r}") from None
    if split.scheme not in ("http", "https") or not split.hostname or split.path not in ("", "/") or split.query:
        raise ConfigurationError(f"{option} wants http://HOST[:PORT] or https://HOST[:PORT], got {url!r}")
    tls = split.scheme == "https"
    return split.hostname, split.scheme, port or (443 if tls else 80), tls


def _cluster(name: str, url: str, option: str, timeout: str) -> dict[str, Any]:
    host, _scheme, port, tls = _endpoint(url, option)
    literal = host.replace(".", "").isdigit() or ":" in host
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if literal else "LOGICAL_DNS",
        "connect_timeout": timeout,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}
            ],
        },
    }
    if tls:
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": host,
            },
        }
    return cluster


def _unchecked(path: str) -> dict[str, Any]:
    """A route of authmw's own endpoint, to authmw, without a check."""
    return {
        "match": {"path": path},
        "route": {"cluster": "authmw_authz", "timeout": "30s"},
        "typed_per_filter_config": {
            _EXT_AUTHZ: {"@type": f"{_TYPES}.http.ext_authz.v3.ExtAuthzPerRoute", "disabled": True}
        },
    }


def bootstrap(*, listen: str, upstream: str, authz: str, body_limit: int) -> dict[str, Any]:
    """The bootstrap: Envoy on ``listen`` (``HOST:PORT``), allowed requests to ``upstream``, checks by the
    ``authmw authz`` at ``authz``, request bodies of up to ``body_limit`` bytes checked (larger ones: 413)."""
    host, port = parse_listen(listen)
    if body_limit < 1:
        raise ConfigurationError("--body-limit must be a positive number of bytes")
    authz_host, authz_scheme, authz_port, _tls = _endpoint(authz, "--authz")
    ext_authz = {
        "@type": f"{_TYPES}.http.ext_authz.v3.ExtAuthz",
        "transport_api_version": "V3",
        "failure_mode_allow": False,
        "status_on_error": {"code": "ServiceUnavailable"},
        "with_request_body": {"max_request_bytes": body_limit, "allow_partial_message": False, "pack_as_bytes": True},
        # Every header: a signature may cover any of them, and a check missing one would fail. But a websocket
        # handshake's Connection and Upgrade would make the check itself a handshake, which authz does not take.
        "allowed_headers": {"patterns": [{"safe_regex": {"regex": ".*"}}]},
        "disallowed_headers": {"patterns": [{"exact": "connection"}, {"exact": "upgrade"}]},
        "http_service": {
            "server_uri": {
                "uri": f"{authz_scheme}://{authz_host}:{authz_port}",
                "cluster": "authmw_authz",
                "timeout": "10s",
            },
            "path_prefix": CHECK_PREFIX,
            "authorization_response": {
                "allowed_upstream_headers": {"patterns": [{"prefix": "x-authmw-", "ignore_case": True}]},
                "allowed_client_headers": {
                    "patterns": [
                        *({"exact": name, "ignore_case": True} for name in _CLIENT_HEADERS),
                        {"prefix": "x-authmw-", "ignore_case": True},
                    ]
                },
            },
        },
    }
    strip = {
        "@type": f"{_TYPES}.http.header_mutation.v3.HeaderMutation",
        "mutations": {
            "request_mutations": [
                {"remove_on_match": {"key_matcher": {"prefix": "x-authmw-", "ignore_case": True}}},
                *({"remove": name} for name in _FORGEABLE),
            ]
        },
    }
    manager = {
        "@type": f"{_TYPES}.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "authmw",
        "use_remote_address": True,  # the peer is appended to X-Forwarded-For, which authmw reads
        "normalize_path": False,
        "merge_slashes": False,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "common_http_protocol_options": {"headers_with_underscores_action": "DROP_HEADER", "idle_timeout": "300s"},
        "upgrade_configs": [{"upgrade_type": "websocket"}],  # the handshake is checked like any request
        "request_headers_timeout": "10s",
        "request_timeout": "120s",
        "stream_idle_timeout": "60s",
        "http_filters": [
            {"name": "envoy.filters.http.header_mutation", "typed_config": strip},
            {"name": _EXT_AUTHZ, "typed_config": ext_authz},
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": f"{_TYPES}.http.router.v3.Router"},
            },
        ],
        "route_config": {
            "name": "authmw",
            "virtual_hosts": [
                {
                    "name": "upstream",
                    "domains": ["*"],
                    "routes": [
                        _unchecked(TOKENS_PATH),
                        _unchecked(SECURITY_TOKENS_PATH),
                        {"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "60s"}},
                    ],
                }
            ],
        },
    }
    listener = {
        "name": "authmw",
        "address": {"socket_address": {"address": host, "port_value": port}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
        ],
    }
    connections = {
        "name": "envoy.resource_monitors.global_downstream_max_connections",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
            "DownstreamConnectionsConfig",
            "max_active_downstream_connections": 10_000,
        },
    }
    return {
        "overload_manager": {"resource_monitors": [connections]},
        "static_resources": {
            "listeners": [listener],
            "clusters": [
                _cluster("authmw_authz", authz, "--authz", "1s"),
                _cluster("upstream", upstream, "--upstream", "5s"),
            ],
        },
    }


def render(config: dict[str, Any]) -> str:
    """The bootstrap as YAML, in the order it was built."""
    import yaml

    return str(yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=120))
