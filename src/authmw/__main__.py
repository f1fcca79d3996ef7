"""``python -m authmw`` runs the CLI."""

import sys

from authmw.cli import main

__all__: list[str] = []

sys.exit(main())
