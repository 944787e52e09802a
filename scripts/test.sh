#!/usr/bin/env bash
# The test command: builds the environment from nothing, then lints and runs the whole suite
# against real Triton servers and a real gateway. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy client/clip_client
# No test may reach a model hub: everything they need is built locally or committed.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/python -m pytest -p no:cacheprovider -q "$@"
