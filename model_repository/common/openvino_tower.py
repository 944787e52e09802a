"""Load an image tower exported as OpenVINO IR (model.xml + model.bin) and run it on numpy.

OpenVINO is a candidate runtime for the image tower: on some CPUs it runs the same graph, with the
same int8 calibration, several times faster than AOTInductor's code (figures: docs/benchmarks.md).
The exporter measures both on the export machine and keeps the faster (export/openvino_export.py).

Settings said outright, because OpenVINO's defaults suit a machine with one model on it:
- INFERENCE_PRECISION_HINT: on a CPU with bf16 OpenVINO otherwise runs "f32" graphs in bf16;
  the precision the exporter gated is the one that runs.
- INFERENCE_NUM_THREADS: the instance's thread setting, as the torch encoders take theirs
  (instances x threads above the core count thrash).
- ENABLE_CPU_PINNING off: several stubs (and the tokenizer's, the preprocessing's) share the cores;
  pinning each to the same ones would make them queue behind each other.
- one stream, latency hint: one dynamic-batcher batch at a time per instance, as Triton schedules.

Shared by the image-encoder model and the exporter (which gates and times what will be served).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

Infer = Callable[[NDArray[Any]], NDArray[Any]]


def compile_options(threads: int, precision: str) -> dict[str, Any]:
    return {
        "INFERENCE_PRECISION_HINT": precision,
        "INFERENCE_NUM_THREADS": threads,
        "ENABLE_CPU_PINNING": False,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
    }


def compile_model(model: Any, threads: int, precision: str) -> Infer:
    """`model`: an openvino.Model or the path of its model.xml."""
    import openvino

    core = openvino.Core()
    source = core.read_model(str(model)) if isinstance(model, Path) else model
    compiled = core.compile_model(source, "CPU", compile_options(threads, precision))
    request = compiled.create_infer_request()

    def infer(pixels: NDArray[Any]) -> NDArray[Any]:
        # One request, reused: its output buffer is copied out before the next call reuses it.
        result = request.infer([np.ascontiguousarray(pixels, dtype=np.float32)])
        embeds = np.array(result[compiled.output(0)], dtype=np.float32)
        if len(embeds) != len(pixels):  # seen with ONEDNN_MAX_CPU_ISA=AVX2 set: no rows at all, no error
            raise RuntimeError(f"OpenVINO answered {len(embeds)} rows for {len(pixels)} images")
        return embeds

    return infer


def version() -> str:
    import openvino

    return str(openvino.__version__).split("-")[0]
