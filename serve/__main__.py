"""`python -m serve`: see serve.cli."""

import sys

from serve.cli import main

sys.exit(main())
