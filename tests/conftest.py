"""What every process of a test run shares: pytest's own, its xdist workers, and the Python processes tests start.

- Passwords are hashed at a test cost (``use_test_scrypt_cost``: scrypt N=2**10, not 2**17): thousands of hashes
  would take minutes. A hash records its cost and another cost refuses it, so the child processes use the same
  one: tests/support/child_site/sitecustomize.py, first on their PYTHONPATH, sets it at their start.
  tests/store/test_store.py checks the production cost itself.
- Children import this checkout's authmw (``src``) and test helpers (the root), whatever is installed.
- ``.ci/run`` turns on the read audit (tests/support/reads.py).
- httpx clients share one default TLS context (``_share_the_default_tls_context``).
- Tests marked ``slow`` run first (``pytest_collection_modifyitems``).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

import pytest

from authmw.store.secrets import use_test_scrypt_cost
from tests.support import reads

ROOT = Path(__file__).resolve().parents[1]
CHILD_SITE = ROOT / "tests" / "support" / "child_site"


def pytest_configure() -> None:
    use_test_scrypt_cost()
    _share_the_default_tls_context()
    reads.install()
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    ours = [str(CHILD_SITE), str(ROOT / "src"), str(ROOT)]
    os.environ["PYTHONPATH"] = os.pathsep.join([*ours, *(p for p in inherited if p not in ours)])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` (seconds each: the longest takes ~30) first, the rest in their order: xdist hands tests
    out in collection order, and a long test handed out last ran on while every other worker sat idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def _share_the_default_tls_context() -> None:
    """httpx builds a TLS context for every client it makes (each ``httpx.get`` makes one), loading the CA bundle:
    26 ms of CPU, ~2,100 times in a run, a sixth of the suite's CPU. One default context serves them all (a context
    is safe to share; the servers under test speak plain HTTP, and a client given its own ``verify`` keeps it)."""
    from httpx._transports import default as transports

    build = transports.create_ssl_context
    shared: list[ssl.SSLContext] = []

    def create_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> ssl.SSLContext:
        if verify is not True or cert is not None or not trust_env:
            return build(verify=verify, cert=cert, trust_env=trust_env)
        if not shared:
            shared.append(build())
        return shared[0]

    transports.create_ssl_context = create_ssl_context
