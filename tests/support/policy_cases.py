"""The policy conformance cases of ../shared/conformance/policy."""

from __future__ import annotations

import json
from typing import Any

from tests.support.vectors import SHARED

POLICY_CASES: dict[str, Any] = json.loads((SHARED / "conformance" / "policy" / "policy_cases.json").read_text())
CASES: list[dict[str, Any]] = POLICY_CASES["cases"]
INVALID: list[dict[str, Any]] = POLICY_CASES["invalid_policies"]
