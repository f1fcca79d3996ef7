"""Example budgets of the property and differential tests (Hypothesis marks them: ``pytest -m hypothesis``).

``make test`` runs a tenth of each budget; ``AUTHMW_HYPOTHESIS_BUDGET=full`` (``make test-full``) runs all of it.
The examples are derandomized, so the smaller run is the first tenth of the full one.
"""

from __future__ import annotations

import os

BUDGET_ENV = "AUTHMW_HYPOTHESIS_BUDGET"
_CHOSEN = os.environ.get(BUDGET_ENV, "")
if _CHOSEN not in ("", "full"):
    raise RuntimeError(f"{BUDGET_ENV} is 'full' or unset, not {_CHOSEN!r}")
FULL = _CHOSEN == "full"


def examples(full: int) -> int:
    """``full`` in a full run; otherwise a tenth of it, but at least 10 (or ``full`` if that is fewer)."""
    return full if FULL else max(full // 10, min(full, 10))
