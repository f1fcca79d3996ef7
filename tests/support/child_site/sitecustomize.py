"""Run by every Python process a test starts (tests/conftest.py puts this directory first on PYTHONPATH): it
hashes passwords at the test run's scrypt cost, as the test process does, and joins the read audit of
``.ci/run`` when that is on (tests/support/reads.py)."""

from authmw.store.secrets import use_test_scrypt_cost
from tests.support import reads

use_test_scrypt_cost()
reads.install()
