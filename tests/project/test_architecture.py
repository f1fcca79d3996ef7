"""The architecture the README draws: layers that import only downwards, no import cycle, a pinned public surface.

Layers, bottom up: the **core** (pure: no I/O, no framework), the **edge** (store, configuration, the middleware,
the sidecar, framework helpers, the HTTP client), the **CLI**; the package root ``authmw`` is the facade over the
core and ``open_guard``. Every import counts, deferred ones too (only ``if TYPE_CHECKING:`` blocks are skipped).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from functools import cache
from pathlib import Path

import pytest

from authmw import errors

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "authmw"
EDGE = ("authmw.store", "authmw.settings", "authmw.assembly", "authmw.admission", "authmw.asgi", "authmw.wsgi")
EDGE += ("authmw.iam_api", "authmw.iam_admin", "authmw.workspace_api", "authmw.proxy", "authmw.contrib")
EDGE += ("authmw.client", "authmw.envoy", "authmw.auditlog", "authmw.extras")
CLI = ("authmw.cli", "authmw.__main__")
FACADE = ("authmw",)
LAYERS = {"core": 0, "edge": 1, "facade": 1, "cli": 2}  # the facade re-exports the core and open_guard
FORBIDDEN_IN_CORE = {"starlette", "werkzeug", "httpx", "uvicorn", "redis", "psycopg", "requests", "socket", "yaml"}

#: The public surface: what users import, module by module. Everything else is internal and may change; adding a
#: public name is a decision, so it is made here too.
PUBLIC = {
    "authmw": [
        "Access", "AccessKey", "AuthContext", "AuthMethod", "AuthmwError", "ConfigurationError", "Credential",
        "Decision", "Guard", "Request", "Route", "RouteCatalog", "Routes", "__version__", "open_guard",
    ],
    "authmw.asgi": ["AuthMiddleware", "AuthmwCredentials", "AuthmwUser", "BodyBudget"],
    "authmw.wsgi": ["AuthMiddleware"],
    "authmw.models": [
        "AccessKey", "AuthContext", "AuthMethod", "AuthType", "Credential", "CredentialKind", "Principal", "Project",
        "Request", "Session", "WhitelistScope", "Workspace",
    ],
    "authmw.routes": [
        "Access", "Route", "RouteCatalog", "Routes", "Unmatched", "modelarts_routes", "routes_from_openapi",
    ],
    "authmw.signing": [
        "SCHEMES", "Inspection", "KeySource", "ReplayGuard", "Scheme", "SecurityTokenResolver", "SignedHttpRequest",
        "SignedParts", "StaticKeys", "Verifier", "presign_url", "sign_request",
    ],
    "authmw.policy": [
        "Decision", "LintWarning", "Policy", "PolicySet", "RouteUse", "Statement", "lint", "modelarts_actions",
        "never_applies", "parse_policy", "system_policies",
    ],
    "authmw.store": [
        "DEFAULT_DOMAIN", "DEFAULT_STORE_URL", "STORE_ENV", "CachedIdentity", "Keyring", "Store", "open_store",
    ],
    "authmw.client": ["HttpxAuth", "RequestsAuth", "SigningConfig"],
    "authmw.contrib.starlette": [
        "action_required", "authenticated", "current_context", "install_error_handler", "protect", "public", "require",
        "routes_from_app",
    ],
    "authmw.contrib.flask": [
        "authenticated", "context", "install_error_handler", "protect", "public", "require", "routes_from_app",
    ],
    "authmw.contrib.django": ["context", "require"],
    "authmw.assertion": [
        "ISSUER", "InvalidAssertion", "UsedAssertions", "jwk_of", "keys_from_jwks", "sign_assertion",
        "verify_assertion",
    ],
    "authmw.tokens": ["DEFAULT_TTL", "ISSUER", "TOKEN_ALGORITHMS", "TokenClaims", "TokenSigner", "TokenVerifier"],
    "authmw.iam_api": ["SECURITY_TOKENS_PATH", "TOKENS_PATH", "AttemptLimiter", "MintLimiter", "TokenService"],
    "authmw.iam_admin": ["ROUTES", "IamAdmin", "is_iam_path", "with_iam_admin"],
    "authmw.settings": ["Settings", "load_settings"],
    "authmw.auditlog": [
        "CAPACITY", "FLUSH_EVERY", "AuditWriter", "audit_to", "audit_to_logger", "close_audit", "records_lost",
    ],
    "authmw.proxy": ["ProxyApp", "build_app", "identity_headers", "serve"],
    "authmw.envoy": ["CHECK_PREFIX", "AuthzApp", "bootstrap", "build_authz", "serve_authz"],
    "authmw.contrib": [],
    "authmw.data": [],
    "authmw.cli": ["main"],
}  # fmt: skip


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> str:
    if module in FACADE:
        return "facade"
    for prefixes, layer in ((CLI, "cli"), (EDGE, "edge")):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return layer
    return "core"


def _skipped(tree: ast.Module) -> set[ast.AST]:
    """The nodes under ``if TYPE_CHECKING:`` (for the type checker only: never imported at run time)."""
    skipped: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.body:
                skipped |= set(ast.walk(child))
    return skipped


@cache  # parsed when a test asks, not at collection: every xdist worker collects, few run these
def _imports(module: str) -> set[str]:
    """Every authmw module and third-party top-level package ``module`` imports, deferred imports included."""
    tree = ast.parse(MODULES[module].read_text())
    skipped = _skipped(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from authmw.x import y`` imports authmw.x.y when that is a module, else authmw.x.
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
    return found


@cache
def _graph(module: str) -> set[str]:
    """The authmw modules ``module`` imports."""
    return {name for name in _imports(module) if name in MODULES}


def test_every_module_has_all() -> None:
    missing = [m for m, path in MODULES.items() if "__all__" not in {getattr(t, "id", "") for t in _targets(path)}]
    assert not missing


def _targets(path: Path) -> list[ast.expr]:
    tree = ast.parse(path.read_text())
    return [t for n in tree.body for t in ([n.target] if isinstance(n, ast.AnnAssign) else getattr(n, "targets", []))]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module: str) -> None:
    layer = _layer(module)
    upward = sorted(
        name
        for name in _graph(module)
        if LAYERS[_layer(name)] > LAYERS[layer] or (_layer(name) == "facade" and layer in ("core", "edge"))
    )
    assert not upward, f"{module} ({layer}) imports {upward}"
    if layer == "core":
        assert not {name.split(".")[0] for name in _imports(module)} & FORBIDDEN_IN_CORE


def test_the_import_graph_has_no_cycle() -> None:
    # A package's __init__ re-exports its modules; a module importing its own package's __init__ is a cycle too.
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for name in sorted(_graph(module)):
            if state.get(name) == 1:
                cycle = [*path[path.index(name) :], name]
                raise AssertionError(" -> ".join(cycle))
            if name not in state:
                visit(name)
        path.pop()
        state[module] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module)


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_the_public_names_are_pinned(module: str) -> None:
    loaded = importlib.import_module(module)
    assert sorted(loaded.__all__) == sorted(PUBLIC[module])
    # isort style, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions, each alphabetical.
    order = sorted(loaded.__all__, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n))
    assert loaded.__all__ == order or module == "authmw"  # __version__ sorts with the functions in RUF022
    for name in loaded.__all__:
        assert hasattr(loaded, name)


def test_the_readme_draws_every_module_in_its_layer() -> None:
    # The README's diagram: the CLI above the first rule, the facade and the edge between the rules, the core below.
    diagram = (SRC.parent / "README.md").read_text().split("## Architecture", 1)[1].split("```text\n", 1)[1]
    drawn: dict[str, str] = {}
    section = 0
    for line in diagram.split("```", 1)[0].splitlines():
        if line.strip().startswith("─"):
            section += 1
            continue
        for word in re.findall(r"\w+(?:\.py|/)", line):
            drawn[word] = ("cli", "edge", "core")[section]
    top = {p.name if p.suffix == ".py" else f"{p.name}/" for p in PACKAGE.glob("*") if p.suffix == ".py" or p.is_dir()}
    top -= {"__init__.py", "__main__.py", "__pycache__/"}
    assert not sorted(top - set(drawn))  # modules the README's diagram leaves out
    for word in sorted(top):
        assert drawn[word] == _layer("authmw." + word.removesuffix(".py").removesuffix("/")), word


def test_every_package_is_pinned() -> None:
    # Each package says through its __init__ what users import from it (a namespace package: nothing).
    packages = {_module_name(path) for path in PACKAGE.rglob("__init__.py")}
    assert packages <= set(PUBLIC)


def test_every_error_class_is_exported() -> None:
    classes = {name for name, value in vars(errors).items() if inspect.isclass(value) and issubclass(value, Exception)}
    assert set(errors.__all__) == classes | {"all_error_classes", "render"}
