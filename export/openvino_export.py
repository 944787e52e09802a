"""The image tower as OpenVINO IR: a candidate runtime that the exporter measures against the
compiled torch tower on the export machine, keeping the faster (--image-runtime auto), as it
chooses a precision (export/hardware.py).

Why measured, not assumed: on an Intel Xeon with AMX, OpenVINO ran our own int8 calibration
5.3x eager fp32 in process where AOTInductor's int8 code ran 2.9x; on an AVX2-only EPYC it ran an
NNCF int8 tower at 0.75x eager (docs/benchmarks.md, the peers). Neither wins everywhere.

What OpenVINO gets: the same graph the torch tower compiles, exported with a dynamic batch: for
fp32 and bf16 the fp32 tower (computed at the precision's hint), for int8 the same PT2E
calibration with its weights left unfolded behind their quantize/dequantize pairs, which OpenVINO
turns into its own int8 kernels. What is served is what is gated: the compiled OpenVINO model,
through the Triton model's own loader (model_repository/common/openvino_tower.py), must pass the
same checks as the torch tower (the int8 accuracy gate, or the precision's trace tolerance).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import select
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clip_contract import artifacts
from export.compiled import COMMON_DIR, batch_dim

ROOT = COMMON_DIR.parent.parent  # where `python -m export.runtime_timing` runs from

# auto keeps OpenVINO only when it measures at least this much faster here, a margin over the
# timing's noise that pays for what OpenVINO costs besides: a float tower's weights in its own
# repacked copy where torch's are memory-mapped from the page cache (fp32 ViT-B/16 served: PSS 1.55
# against 1.21 GiB, for 1.02x the images/s). An int8 tower's weights are prepacked by either
# runtime (PSS 1.48 against 1.49 GiB), so only the noise is paid for.
AUTO_SPEEDUP = {"float": 1.1, "int8": 1.05}
MEASURE_BATCH = 4  # images per timed call: a dynamic-batcher batch under light load
MEASURE_SECONDS = 1.5  # per candidate and round, after a warm-up (export/runtime_timing.py)
MEASURE_ROUNDS = 2
NEIGHBOUR_DUTY = 0.3  # of one core (neighbour())
WORKER_TIMEOUT = 300.0  # seconds a timing worker may take to load its tower, or to run its calls


def runtime_module() -> Any:
    """The Triton model's own OpenVINO loader, so the exporter times and gates what is served."""
    spec = importlib.util.spec_from_file_location("openvino_tower", COMMON_DIR / "openvino_tower.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unavailable() -> str | None:
    """Why OpenVINO cannot be a candidate here, or None."""
    try:
        import openvino  # noqa: F401
    except ImportError as error:
        return f"openvino is not installed ({error})"
    return None


def convert(module: torch.nn.Module, example: torch.Tensor, max_batch: int) -> Any:
    """`module` as an openvino.Model with a dynamic batch."""
    import openvino

    with torch.no_grad():
        program = torch.export.export(module, (example,), dynamic_shapes=[{0: batch_dim(max_batch)}])
    return openvino.convert_model(program)


def save(model: Any, folder: Path) -> Path:
    """model.xml and model.bin in `folder`; the weights as they are (OpenVINO would otherwise
    compress fp32 weights to fp16 on save, a precision nobody gated)."""
    import openvino

    path = folder / artifacts.OPENVINO
    openvino.save_model(model, str(path), compress_to_fp16=False)
    return path


def torch_facing(infer: Callable[[Any], Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A numpy tower called as the torch towers are, for the exporter's checks."""
    return lambda pixels: torch.from_numpy(infer(pixels.detach().float().numpy()))


def as_served(runtime: str, path: Path, instances: int, threads: int, hint: str, size: int) -> float:
    """images/s of `instances` processes each serving the tower at `path` with `threads` threads
    (export/runtime_timing.py), started together once all have loaded it: the layout as Triton
    runs it, one stub per instance. A worker that says anything else, or nothing within
    WORKER_TIMEOUT, fails the timing; every worker is killed and reaped however it ends."""
    command = [sys.executable, "-m", "export.runtime_timing", runtime, str(path), str(threads), hint, str(size)]
    workers: list[subprocess.Popen[str]] = []
    try:
        for _ in range(instances):
            workers.append(
                subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
            )
        for worker in workers:
            if (line := _line(worker)) != "ready":
                raise RuntimeError(f"timing {runtime} at {path}: a worker said {line!r}")
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = [json.loads(_line(worker)) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    return sum(result["images"] for result in results) / max(result["seconds"] for result in results)


def _line(worker: subprocess.Popen[str]) -> str:
    """The worker's next line, or RuntimeError when it has none within WORKER_TIMEOUT."""
    assert worker.stdout is not None
    ready, _, _ = select.select([worker.stdout], [], [], WORKER_TIMEOUT)
    if not ready:
        raise RuntimeError(f"a timing worker said nothing within {WORKER_TIMEOUT:g} s")
    return worker.stdout.readline().strip()


@contextlib.contextmanager
def neighbour() -> Iterator[None]:
    """A process busy NEIGHBOUR_DUTY of one core while the candidates are timed, as image decoding
    and the gateway are beside the encoder when it serves. It matters: OpenVINO's thread pool copes
    with a busy core better than torch's OpenMP threads. With one int8 instance of 2 threads on the
    Intel AMX class, served OpenVINO ran 1.41x torch's; timed alone in process 1.10-1.38x, beside
    this neighbour 1.31x. Stopped however the measurement ends."""
    busy, idle = 0.01 * NEIGHBOUR_DUTY, 0.01 * (1 - NEIGHBOUR_DUTY)
    code = (  # it ends itself once the exporter is gone (killed before its `finally` could run)
        "import os, time\n"
        f"while os.getppid() == {os.getpid()}:\n"
        "    started = time.perf_counter()\n"
        f"    while time.perf_counter() - started < {busy}: pass\n"
        f"    time.sleep({idle})\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL)
    try:
        yield
    finally:
        process.kill()
        process.wait()


def compare(towers: dict[str, Path], size: int, instances: int, threads: int, hint: str) -> dict[str, float]:
    """images/s of each tower ("torch": its package, "openvino": its model.xml) served in the layout,
    beside the neighbour, best of MEASURE_ROUNDS rounds taken in turn: measured once each, one
    after the other, the same two towers swapped their ratio between 1.10x and 1.38x from one
    export to the next on a shared 2-core machine."""
    rates = dict.fromkeys(towers, 0.0)
    with neighbour():
        for _ in range(MEASURE_ROUNDS):
            for name, path in towers.items():
                rates[name] = max(rates[name], as_served(name, path, instances, threads, hint, size))
    return rates


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: str  # "torch" or "openvino"
    reason: str  # one sentence: why, on this machine
    rates: dict[str, float] = field(default_factory=dict)  # images/s per candidate, measured here


def decide(
    requested: str, rates: dict[str, float], problem: str | None, layout: str, required: float = AUTO_SPEEDUP["float"]
) -> RuntimeChoice:
    """The runtime for `requested` given what was measured here: `rates` ("torch", "openvino"
    images/s at MEASURE_BATCH, served in `layout`, e.g. "2 instances x 1 thread") and `problem`
    (why OpenVINO cannot serve this tower here, or None); auto keeps OpenVINO from `required`x.
    An explicit request that cannot be met raises ValueError (the exporter refuses the export)."""
    if requested == "torch":
        return RuntimeChoice("torch", "torch: asked for (--image-runtime torch)", rates)
    if problem is not None:
        if requested == "openvino":
            raise ValueError(f"--image-runtime openvino: {problem}")
        return RuntimeChoice("torch", f"torch: OpenVINO is no candidate here ({problem})", rates)
    measured = (
        f"OpenVINO {rates['openvino']:.1f} images/s against torch's {rates['torch']:.1f} "
        f"({rates['openvino'] / rates['torch']:.2f}x) at batch {MEASURE_BATCH}, {layout}, here"
    )
    if requested == "openvino":
        return RuntimeChoice("openvino", f"openvino: asked for; {measured}", rates)
    if rates["openvino"] >= required * rates["torch"]:
        return RuntimeChoice("openvino", f"openvino: {measured}", rates)
    return RuntimeChoice("torch", f"torch: {measured} (OpenVINO is kept from {required}x)", rates)
