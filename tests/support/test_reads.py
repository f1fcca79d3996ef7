"""The read audit of ``.ci/run`` (tests/support/reads.py) sees what a test process reads beside the checkout: a
process the tests start and the processes it starts in turn log every file opened and directory listed under
what stood beside the checkout when the run began, and nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support import reads


def test_reads_beside_the_checkout_are_logged_by_every_process(tmp_path: Path) -> None:
    parent = tmp_path / "work"
    shared, checkout = parent / "shared", parent / "authmw"
    for directory in (shared, checkout):
        directory.mkdir(parents=True)
    (shared / "vectors.json").write_text("[]")
    (shared / "cases.json").write_text("[]")
    (checkout / "inside.txt").write_text("ours")
    log = tmp_path / "reads.log"
    log.write_text("")
    env = {
        **os.environ,  # PYTHONPATH starts with tests/support/child_site (tests/conftest.py): the audit's hook
        reads.OUTSIDE_ENV: str(parent),
        reads.LOG_ENV: str(log),
        reads.SIBLINGS_ENV: "shared\nauthmw",
        reads.CHECKOUT_ENV: str(checkout),
    }
    grandchild = f"open({str(shared / 'cases.json')!r}).read()"
    code = textwrap.dedent(
        f"""\
        import os, subprocess, sys
        open({str(shared / "vectors.json")!r}).read()
        os.listdir({str(shared)!r})
        open({str(checkout / "inside.txt")!r}).read()  # the checkout itself: not watched
        os.makedirs({str(parent / "made-later")!r})  # what appears during the run: not watched
        open({str(parent / "made-later" / "x")!r}, "w").write("x")
        subprocess.run([sys.executable, "-c", {grandchild!r}], check=True)
        """
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    logged = sorted(line.split(" ", 1)[1] for line in log.read_text().splitlines())
    real = os.path.realpath
    assert logged == sorted(
        [
            f"open {real(shared / 'cases.json')}",
            f"open {real(shared / 'vectors.json')}",
            f"os.listdir {real(shared)}",
        ]
    ), logged


def test_without_the_environment_nothing_is_audited(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").write_text("x")
    env = {k: v for k, v in os.environ.items() if k not in (reads.OUTSIDE_ENV, reads.LOG_ENV)}
    code = (
        f"import sys; open({str(tmp_path / 'shared' / 'data')!r}).read(); print(hasattr(sys, '_authmw_reads_audited'))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout == "False\n"
