"""Exit 0 when the Triton at URL has every model clip-serve needs READY, else 1. For container
health checks where Triton runs alone:

    python -m launcher.healthcheck http://localhost:8000

Model readiness, not server readiness: Triton reports itself ready while a model is still loading.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

MODELS = ("clip_classify", "clip_embed_image", "clip_embed_text")


def main(argv: list[str]) -> int:
    base = (argv[1] if len(argv) > 1 else "http://localhost:8000").rstrip("/")
    for model in MODELS:
        try:
            with urllib.request.urlopen(f"{base}/v2/models/{model}/ready", timeout=3) as response:
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
