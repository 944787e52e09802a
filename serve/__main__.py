"""`python -m serve`: see serve.cli."""

import sys

import configuration.threads  # noqa: F401  (first: before numpy loads)
from serve.cli import main

sys.exit(main())
