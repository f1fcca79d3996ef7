"""Project-level contracts: documented error codes (docs/errors.md), sorted public names, the core's imports."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import authmw
import authmw.identity
import authmw.policy
import authmw.signing
import authmw.store
from authmw import errors

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "src" / "authmw"
FORBIDDEN_IN_CORE = {"starlette", "werkzeug", "httpx", "uvicorn", "redis", "psycopg", "requests", "socket", "yaml"}
OUTSIDE_CORE = {
    *("cli", "client", "store", "proxy", "contrib"),
    *("settings.py", "assembly.py", "asgi.py", "wsgi.py", "iam_api.py", "__main__.py"),
}
EDGE_MODULES = {"cli", "client", "store", "settings", "assembly", "asgi", "wsgi", "proxy", "contrib", "iam_api"}
# The one deferred edge import the core makes: Guard.from_store / from_config open a store through it.
DEFERRED_EDGE_IMPORTS = {("guard.py", "authmw.assembly")}


def test_every_error_code_is_documented() -> None:
    reference = (ROOT / "docs" / "errors.md").read_text()
    missing = [cls.code for cls in errors.all_error_classes() if f"`{cls.code}`" not in reference]
    assert not missing


@pytest.mark.parametrize("module", [authmw, authmw.signing, authmw.policy, authmw.identity, authmw.store])
def test_public_names_are_sorted_and_exist(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    # isort style, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions, each alphabetical.
    assert names == sorted(names, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n))
    for name in names:
        assert hasattr(module, name)


def _core_files() -> list[Path]:
    return [p for p in CORE.rglob("*.py") if p.relative_to(CORE).parts[0] not in OUTSIDE_CORE]


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(CORE)))
def test_core_imports_no_framework_or_io(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
            if node.module.startswith("authmw.") and node.module.split(".")[1] in EDGE_MODULES:
                deferred = node not in tree.body and (str(path.relative_to(CORE)), node.module) in DEFERRED_EDGE_IMPORTS
                if not deferred:
                    imported.add(node.module)
    assert not imported & FORBIDDEN_IN_CORE
    assert not {name for name in imported if name.startswith("authmw.")}


def test_signing_demo_runs_end_to_end() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo_signing.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.count("-> 200") >= 6
    for code in ("signature_mismatch", "replayed_request", "date_out_of_window", "missing_credentials"):
        assert f"-> 401 {code}" in out


def test_make_demo_walkthrough_runs_end_to_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHMW_")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "every outcome was as expected" in out
    assert out.count("[as expected]") == 13
    for code in ("action_denied", "workspace_denied", "address_not_allowed", "missing_credentials", "replayed_request"):
        assert code in out
