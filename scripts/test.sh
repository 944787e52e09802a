#!/usr/bin/env bash
# The test command: builds the environment from nothing, then lints and runs the whole suite
# against real Triton servers and a real gateway. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
# mypy --strict (pyproject.toml) over every first-party package; the Triton models one folder at a
# time, each seeing the shared modules the exporter copies beside it. MYPYPATH=proto: the API
# package is installed editable, through an import hook mypy cannot follow.
MYPYPATH=proto .venv/bin/mypy client/clip_client configuration gateway launcher export serve bench demo deploy scripts tests \
  model_repository/__init__.py model_repository/*/__init__.py model_repository/*/configure.py
for model in model_repository/*/1; do
  if compgen -G "$model/*.py" >/dev/null; then MYPYPATH=model_repository/common:proto .venv/bin/mypy "$model"; fi
done
# The shared modules by module name: model_repository is a package (the templates' configure.py),
# and these are imported flat, beside each model, as the exporter copies them.
MYPYPATH=model_repository/common:proto .venv/bin/mypy $(for f in model_repository/common/*.py; do echo -m "$(basename "$f" .py)"; done)
MYPYPATH=proto .venv/bin/mypy -p clip_contract
# No test may reach a model hub: everything they need is built locally or committed.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# The Kubernetes cluster test starts a control plane from this kit of binaries, when the machine
# has it beside the checkout (tests/test_kubernetes_cluster.py; KUBECONFIG names another cluster).
if [ -z "${CLIP_KUBERNETES_KIT:-}" ] && [ -x ../shared/kubernetes/cluster.sh ]; then
  export CLIP_KUBERNETES_KIT="$(cd ../shared/kubernetes && pwd)"
fi
.venv/bin/python -m pytest -p no:cacheprovider -q "$@"
