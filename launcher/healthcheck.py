"""Exit 0 when the Triton at URL has every public clip-serve model READY, else 1. For container
health checks and the Kubernetes probes of a Triton pod:

    python -m launcher.healthcheck http://localhost:8000

"Ready" means what the gateway means by it (clip_contract.models): every public ensemble READY,
which an ensemble only is once all its steps are. Model readiness, not server readiness: Triton
reports itself ready while a model is still loading.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from clip_contract.models import PUBLIC_MODEL_NAMES

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # Triton is local: never via HTTP(S)_PROXY


def main(argv: list[str]) -> int:
    base = (argv[1] if len(argv) > 1 else "http://localhost:8000").rstrip("/")
    for model in PUBLIC_MODEL_NAMES:
        try:
            with DIRECT.open(f"{base}/v2/models/{model}/ready", timeout=3) as response:
                ready = response.status == 200
        except (urllib.error.URLError, OSError) as error:
            print(f"{model}: {error}", file=sys.stderr)
            return 1
        if not ready:
            print(f"{model}: not ready", file=sys.stderr)
            return 1
    print("ready")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
