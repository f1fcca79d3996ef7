"""What every process of a test run shares: pytest's own, its xdist workers, and the Python processes tests start.

- Passwords are hashed at a test cost (``use_test_scrypt_cost``: scrypt N=2**10, not 2**17): thousands of hashes
  would take minutes. A hash records its cost and another cost refuses it, so the child processes use the same
  one: tests/support/child_site/sitecustomize.py, first on their PYTHONPATH, sets it at their start.
  tests/store/test_store.py checks the production cost itself.
- Children import this checkout's authmw (``src``) and test helpers (the root), whatever is installed.
- ``.ci/run`` turns on the read audit (tests/support/reads.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from authmw.store.secrets import use_test_scrypt_cost
from tests.support import reads

ROOT = Path(__file__).resolve().parents[1]
CHILD_SITE = ROOT / "tests" / "support" / "child_site"


def pytest_configure() -> None:
    use_test_scrypt_cost()
    reads.install()
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    ours = [str(CHILD_SITE), str(ROOT / "src"), str(ROOT)]
    os.environ["PYTHONPATH"] = os.pathsep.join([*ours, *(p for p in inherited if p not in ours)])
