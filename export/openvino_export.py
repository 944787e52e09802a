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

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clip_contract import artifacts
from export.compiled import COMMON_DIR, batch_dim

# auto keeps OpenVINO only when it measures at least this much faster here: on a near tie, one
# runtime for both towers (one less library in the stub's memory, one less thing to go wrong).
AUTO_SPEEDUP = 1.1
MEASURE_BATCH = 4  # images per timed call: a dynamic-batcher batch under light load
MEASURE_SECONDS = 1.0  # per candidate and round, at least three calls after a warm-up
MEASURE_ROUNDS = 2


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


def images_per_second(call: Callable[[torch.Tensor], Any], pixels: torch.Tensor) -> float:
    """From the fastest of the calls (as hardware.matmul_gflops): a load beside the export must
    not decide the runtime."""
    with torch.no_grad():
        call(pixels)  # warm-up: kernel selection, first-call allocations
        calls, best, started = 0, float("inf"), time.perf_counter()
        while time.perf_counter() - started < MEASURE_SECONDS or calls < 3:
            call_started = time.perf_counter()
            call(pixels)
            best = min(best, time.perf_counter() - call_started)
            calls += 1
    return len(pixels) / best


def compare(candidates: dict[str, Callable[[torch.Tensor], Any]], size: int) -> dict[str, float]:
    """images/s of each candidate at MEASURE_BATCH, best of MEASURE_ROUNDS rounds taken in turn:
    measured one after the other once, the same two towers swapped their ratio between 1.10x and
    1.38x from one export to the next on a shared 2-core machine."""
    pixels = torch.randn(MEASURE_BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
    rates = dict.fromkeys(candidates, 0.0)
    for _ in range(MEASURE_ROUNDS):
        for name, call in candidates.items():
            rates[name] = max(rates[name], images_per_second(call, pixels))
    return rates


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: str  # "torch" or "openvino"
    reason: str  # one sentence: why, on this machine
    rates: dict[str, float] = field(default_factory=dict)  # images/s per candidate, measured here


def decide(requested: str, rates: dict[str, float], problem: str | None, threads: int) -> RuntimeChoice:
    """The runtime for `requested` given what was measured here: `rates` ("torch", "openvino"
    images/s at MEASURE_BATCH) and `problem` (why OpenVINO cannot serve this tower here, or None).
    An explicit request that cannot be met raises ValueError (the exporter refuses the export)."""
    if requested == "torch":
        return RuntimeChoice("torch", "torch: asked for (--image-runtime torch)", rates)
    if problem is not None:
        if requested == "openvino":
            raise ValueError(f"--image-runtime openvino: {problem}")
        return RuntimeChoice("torch", f"torch: OpenVINO is no candidate here ({problem})", rates)
    measured = (
        f"OpenVINO {rates['openvino']:.1f} images/s against torch's {rates['torch']:.1f} "
        f"({rates['openvino'] / rates['torch']:.2f}x) at batch {MEASURE_BATCH}, {threads} threads, here"
    )
    if requested == "openvino":
        return RuntimeChoice("openvino", f"openvino: asked for; {measured}", rates)
    if rates["openvino"] >= AUTO_SPEEDUP * rates["torch"]:
        return RuntimeChoice("openvino", f"openvino: {measured}", rates)
    return RuntimeChoice("torch", f"torch: {measured} (OpenVINO is kept from {AUTO_SPEEDUP}x)", rates)
