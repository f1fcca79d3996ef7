"""``python -m authmw`` runs the CLI."""

import sys

from authmw.cli import main

sys.exit(main())
