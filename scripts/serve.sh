#!/usr/bin/env bash
# The run command: sets everything up on a fresh machine, exports the model, starts Triton and the
# gateway, classifies the bundled sample image to show it working, and stays in the foreground
# until Ctrl-C. Extra arguments go to `python -m serve` (e.g. --model /path/to/snapshot --port 50051).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m serve "$@"
