"""`python -m launcher`: see launcher.cli."""

import sys

import configuration.threads  # noqa: F401  (first: before numpy loads)
from launcher.cli import main

sys.exit(main())
