"""One Triton instance's worth of an image tower, timed in its own process, as Triton runs each
instance in its own stub: `python -m export.runtime_timing RUNTIME PATH THREADS HINT SIZE`.

It loads the tower (`torch`: an AOTInductor package; `openvino`: model.xml through the image
encoder's own loader), calls it once, prints "ready", waits for a line on stdin, then calls it
on MEASURE_BATCH images until MEASURE_SECONDS have passed and prints {"images", "seconds"} as
JSON. Threads in one process would not do: two callers of one torch process measured half the
rate of the same towers in two processes (the package's calls hold the GIL).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from export import compiled, openvino_export


def main() -> None:
    runtime, path, threads, hint, size = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    torch.set_num_threads(threads)
    if runtime == "torch":
        call = compiled.load(path)
    else:
        call = openvino_export.torch_facing(openvino_export.runtime_module().compile_model(path, threads, hint))
    pixels = torch.randn(openvino_export.MEASURE_BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        call(pixels)  # warm-up: kernel selection, first-call allocations
        print("ready", flush=True)
        sys.stdin.readline()
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < openvino_export.MEASURE_SECONDS:
            call(pixels)
            calls += 1
    print(json.dumps({"images": calls * len(pixels), "seconds": time.perf_counter() - started}), flush=True)


if __name__ == "__main__":
    main()
