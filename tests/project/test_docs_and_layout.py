"""Project-level contracts: error codes documented (docs/errors.md), the demos run (layering: test_architecture.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from authmw import errors

ROOT = Path(__file__).resolve().parents[2]


def test_every_error_code_is_documented() -> None:
    reference = (ROOT / "docs" / "errors.md").read_text()
    missing = [cls.code for cls in errors.all_error_classes() if f"`{cls.code}`" not in reference]
    assert not missing


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


@pytest.mark.slow
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
    assert out.count("[as expected]") == 18
    for code in ("action_denied", "workspace_denied", "address_not_allowed", "missing_credentials", "replayed_request"):
        assert code in out
