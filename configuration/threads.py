"""One OpenBLAS thread for numpy, set before numpy loads: imported first by `python -m gateway`,
`python -m serve` and `python -m launcher`, and put in the environment Triton starts with (its
Python-backend stubs inherit it).

The numpy work beside the model (the similarity step, softmax, a Classify by label set id scored
in the gateway) is on small matrices, and OpenBLAS's threads spin for a while after each call: on
2 cores they took the encoders' time. Measured (ViT-B/16 int8, random weights, c=4, one run, Intel
Xeon AMX 2 cores): 1,000 labels by label set id 10.0 -> 18.2 img/s (2 labels: 18.3), 1,000 labels
sent 11.7 -> 15.7 img/s. torch has its own thread pool and is not affected. An operator's own
OPENBLAS_NUM_THREADS is kept.
"""

from __future__ import annotations

import os

VARIABLE = "OPENBLAS_NUM_THREADS"
THREADS = "1"


def pin(environment: os._Environ[str] | dict[str, str]) -> None:
    """The one BLAS thread in `environment`, unless it names its own."""
    environment.setdefault(VARIABLE, THREADS)


pin(os.environ)
