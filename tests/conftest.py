"""Shared test fixtures: the conformance data in ../shared and the wire-capture helpers."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # lets every test package import the helpers in tests/ (wire, vectors)
