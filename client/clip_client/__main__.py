"""`python -m clip_client` is the clip-client command line."""

import sys

from clip_client.cli import main

sys.exit(main())
