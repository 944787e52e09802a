"""What the machine runs natively, and the precision the exporter picks from it.

CPU flags are not enough. On the machines this project has run on: an AMD EPYC with avx512_bf16
ran bf16 encoders 3x faster than fp32; an AVX2-only EPYC ran them 7x slower (no native bf16); and
an Intel Xeon that reports avx512_bf16 ran a bf16 matmul at half its fp32 speed. So a reduced
precision is chosen, or accepted, only where the flags say it is native AND a short matmul
measured here says it is faster (about a second of work). The exporter writes the decision and its
reason into the manifest, the ensembles' configs (GetModelInfo.execution) and its output.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clip_contract.precisions import AUTO, BF16, FP16, FP32, INT8, lookup
from export.int8_scheme import Int8Refused, Int8Scheme, KernelProbe, choose_int8_scheme, probe_kernel

# Features that change which numeric path is fast: AVX-512 and its bf16 / VNNI extensions, AMX.
FEATURES = (
    "avx2",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "avx_vnni",
    "avx512_fp16",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
    "amx_tile",
)
# A reduced precision is the automatic choice only when its matmul is at least this much faster
# than fp32 here (a whole encoder gains less than a bare matmul).
AUTO_SPEEDUP = 1.5


def cpu_info() -> dict[str, Any]:
    model, flags = "unknown", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "features": [name for name in FEATURES if name in flags]}


def torch_capability() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def describe() -> dict[str, Any]:
    """The machine, for a manifest or a result file."""
    info: dict[str, Any] = {"arch": platform.machine(), "cores": os.cpu_count(), **cpu_info()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cpu_capability"] = torch_capability()
        info["mkldnn_bf16_supported"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (ImportError, AttributeError, RuntimeError):
        pass
    return info


def matmul_gflops(dtype: Any, size: int = 1024, seconds: float = 0.4) -> float:
    """This machine's square-matmul speed at `dtype`, on all its threads: from its fastest call in
    `seconds` (at least three), not the mean, so that a load beside the measurement (a shared CI
    machine) does not decide the precision: under stress-ng the mean's bf16/fp32 ratio ranged
    2.5-5.5x on one machine, enough to flip a choice near the threshold."""
    import torch

    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b  # warm-up: kernel selection and packing
    calls, best, started = 0, float("inf"), time.perf_counter()
    while time.perf_counter() - started < seconds or calls < 3:
        call_started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - call_started)
        calls += 1
    return 2 * size**3 / best / 1e9


def cpu_speedup(precision: str) -> float:
    """Measured matmul speed at `precision` over fp32 (only the reduced float precisions are
    measured this way; int8 measures its own kernels: 1.0)."""
    import torch

    spec = lookup(precision)
    if not spec.reduced:
        return 1.0
    return matmul_gflops(getattr(torch, spec.tower_dtype)) / matmul_gflops(getattr(torch, FP32.tower_dtype))


class PrecisionRefused(ValueError):
    """A precision that would run slower than fp32 here, asked for without the override."""


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    reason: str  # one sentence: why this precision, on this machine
    int8_scheme: Int8Scheme | None = None  # for int8: how it is quantized here, and why


def _native_features(precision: str, features: list[str]) -> list[str]:
    return [name for name in lookup(precision).native_cpu_features if name in features]


def choose_precision(
    requested: str,
    device: str,
    *,
    allow_slow: bool = False,
    info: dict[str, Any] | None = None,
    speedup: Any = cpu_speedup,
    int8_probe: Callable[[int], KernelProbe] = probe_kernel,
) -> PrecisionChoice:
    """`requested` is "auto" or a precision. On a GPU the request stands (auto: bf16 where the GPU
    has it, else fp16). On a CPU, auto picks bf16 only where it is native and measured faster;
    an explicit bf16/fp16 that is not both is refused unless `allow_slow`; int8 takes the scheme its
    kernels measure exact and faster here, or is refused the same way (export/int8_scheme.py)."""
    if device == "gpu":
        if requested != AUTO:
            return PrecisionChoice(requested, f"{requested} asked for, on the GPU")
        import torch

        chosen = BF16.name if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else FP16.name
        return PrecisionChoice(chosen, f"{chosen}: the GPU's native reduced precision")
    info = info or cpu_info()
    features = list(info.get("features", []))
    cpu = f"{info.get('model', 'this CPU')}"
    if requested == FP32.name:
        return PrecisionChoice(FP32.name, "fp32 asked for")
    if requested != AUTO and lookup(requested).quantized:
        try:
            scheme = choose_int8_scheme(cpu, allow_slow=allow_slow, probe=int8_probe)
        except Int8Refused as refused:
            raise PrecisionRefused(str(refused)) from None
        return PrecisionChoice(INT8.name, f"int8 asked for (calibrated, accuracy-gated); {scheme.reason}", scheme)
    candidates = [BF16.name] if requested == AUTO else [requested]
    for precision in candidates:
        native = _native_features(precision, features)
        if not native:
            if requested == AUTO:
                return PrecisionChoice(FP32.name, f"fp32: {cpu} has no native bf16 (no avx512_bf16 or amx_bf16)")
            if allow_slow:
                return PrecisionChoice(precision, f"{precision} forced on {cpu} without native {precision}")
            raise PrecisionRefused(
                f"{precision} is refused on {cpu}: it has no native {precision} "
                f"({' or '.join(lookup(precision).native_cpu_features)}), so {precision} would be emulated and run "
                f"several times slower than fp32 (7x measured on an AVX2-only EPYC). Use --precision fp32 (or auto), "
                f"or int8 with calibration images; --allow-slow-precision exports it anyway."
            )
        ratio = speedup(precision)
        if ratio >= (AUTO_SPEEDUP if requested == AUTO else 1.0):
            return PrecisionChoice(
                precision,
                f"{precision}: native on {cpu} ({', '.join(native)}), its matmul measured {ratio:.1f}x fp32 here",
            )
        if requested == AUTO:
            return PrecisionChoice(
                FP32.name,
                f"fp32: {cpu} reports {', '.join(native)}, but a {precision} matmul measured {ratio:.2f}x fp32 here",
            )
        if allow_slow:
            return PrecisionChoice(precision, f"{precision} forced; its matmul measured {ratio:.2f}x fp32 here")
        raise PrecisionRefused(
            f"{precision} is refused on {cpu}: it reports {', '.join(native)}, but a {precision} matmul measured "
            f"{ratio:.2f}x the speed of fp32 here, so {precision} encoders would be slower than fp32. Use "
            f"--precision fp32 (or auto); --allow-slow-precision exports it anyway."
        )
    raise AssertionError("unreachable")  # pragma: no cover
