"""Which int8 scheme this machine's kernels serve well, found by measuring them, not by the flags.

The int8 image tower runs oneDNN's u8 (activations) x s8 (weights) matmuls. With VNNI (vpdpbusd)
they accumulate in int32 and are exact. Without it (an AVX2-only CPU, e.g. the AMD EPYC of the CI
machines) they multiply-add pairs into int16 (vpmaddubsw), which saturates once two products pass
32,767: full-range activations (0..255) x weights up to 127 do. That is what failed the accuracy gate
on an AVX2-only EPYC (mean cosine 0.9961, top-1 agreement 67 % against 0.99985 and 100 % on an
AVX-512 VNNI Xeon). Activations quantized to 7 bits (0..127, "reduced range") cannot overflow:
2 x 127 x 128 = 32,512.

So the exporter runs one int8 matmul of a ViT-B/16 MLP shape (1,576 x 768 by 768 x 3,072) through
the kernel Inductor lowers the quantized linears to (onednn.qlinear_pointwise), with full-range and
then 7-bit activations, compares each with the exact product and times it against the same fp32
matmul (best of four interleaved calls; one to three seconds in all on 2 cores):
- full range exact: static int8, full-range activations (the VNNI path);
- full range inexact, 7 bits exact: static int8, reduced-range activations;
- neither exact, or the exact one slower than fp32: int8 is refused (--allow-slow-precision forces
  the exact/reduced scheme anyway), with the figures.
The accuracy gate still checks the chosen scheme on the model itself (export/quantize.py).
`ONEDNN_MAX_CPU_ISA=AVX2` makes oneDNN use its AVX2 kernels on any x86 CPU; the probe then finds
the saturation, which is how the AVX2-only path is exercised on a VNNI machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The probe's shape: a ViT-B/16 MLP up-projection at batch 8 (197 tokens per image).
ROWS, INNER, COLUMNS = 8 * 197, 768, 3072
# A kernel is "exact" when its result is within this of the exact product (relative to the
# largest value): int32 accumulation gives ~1e-7 (float rounding of the reference); int16
# saturation gave 0.11 on the AVX2 kernels.
EXACT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class KernelProbe:
    """One activation range through this machine's int8 kernel: its error and speed over fp32."""

    activation_max: int  # 255: full-range u8 activations; 127: reduced range (7 bits)
    relative_error: float
    speedup: float  # int8 matmul over the same fp32 matmul, here

    @property
    def exact(self) -> bool:
        return self.relative_error <= EXACT_TOLERANCE


@dataclass(frozen=True)
class Int8Scheme:
    name: str  # "static" or "static-reduced-range"
    reduce_range: bool
    reason: str  # why this scheme on this machine, with the measured figures
    probes: tuple[KernelProbe, ...]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "reduce_range": self.reduce_range,
            "reason": self.reason,
            "probes": [
                {
                    "activation_max": probe.activation_max,
                    "relative_error": round(probe.relative_error, 6),
                    "speedup_over_fp32": round(probe.speedup, 2),
                }
                for probe in self.probes
            ],
        }


class Int8Refused(ValueError):
    """No int8 scheme is exact and faster than fp32 on this machine's kernels."""


def _best_seconds(work: Callable[[], Any], other: Callable[[], Any], rounds: int) -> tuple[float, float]:
    """The fastest of `rounds` timed calls of each, the two interleaved so that a load beside the
    measurement slows both alike; one warm-up call each first (kernel selection, packing)."""
    work(), other()
    best_work = best_other = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        best_work = min(best_work, time.perf_counter() - started)
        started = time.perf_counter()
        other()
        best_other = min(best_other, time.perf_counter() - started)
    return best_work, best_other


def probe_kernel(activation_max: int, rounds: int = 4) -> KernelProbe:
    """Run this machine's quantized-linear kernel on activations in 0..activation_max."""
    import torch

    generator = torch.Generator().manual_seed(0)
    activations = torch.randint(0, activation_max + 1, (ROWS, INNER), dtype=torch.uint8, generator=generator)
    weights = torch.randint(-128, 128, (COLUMNS, INNER), dtype=torch.int8, generator=generator)
    x_scale, w_scale = 0.02, 0.01
    packed = torch.ops.onednn.qlinear_prepack(weights, [ROWS, INNER])
    weight_scales = torch.full((COLUMNS,), w_scale)
    weight_zero_points = torch.zeros(COLUMNS, dtype=torch.int64)

    def int8() -> Any:
        return torch.ops.onednn.qlinear_pointwise(
            activations,
            x_scale,
            0,
            packed,
            weight_scales,
            weight_zero_points,
            None,
            1.0,
            0,
            torch.float32,
            "none",
            [],
            "",
        )

    rows = 64  # the exact product of a slice is enough to see saturation (float64 is slow)
    exact = (activations[:rows].double() @ weights.double().T) * (x_scale * w_scale)
    error = float((int8()[:rows].double() - exact).abs().max() / exact.abs().max())
    fp32_x, fp32_w = activations.float() * x_scale, weights.float() * w_scale
    int8_seconds, fp32_seconds = _best_seconds(int8, lambda: fp32_x @ fp32_w.T, rounds)
    return KernelProbe(activation_max, error, fp32_seconds / int8_seconds)


def choose_int8_scheme(
    cpu: str, *, allow_slow: bool = False, probe: Callable[[int], KernelProbe] = probe_kernel
) -> Int8Scheme:
    """The int8 scheme for this machine (see the module docstring); `probe` is injectable so that
    every machine class's outcome is tested on any machine."""
    full = probe(255)
    if full.exact and full.speedup >= 1.0:
        return Int8Scheme(
            "static",
            False,
            f"static int8 with full-range activations: {cpu}'s int8 kernels are exact (int32 accumulation, "
            f"VNNI) and measured {full.speedup:.1f}x fp32 here",
            (full,),
        )
    reduced = probe(127)
    saturated = (
        f"full-range activations saturate {cpu}'s int8 kernels (relative error {full.relative_error:.3f} in a "
        f"probe matmul: no VNNI, int16 pair sums)"
        if not full.exact
        else f"{cpu}'s full-range int8 kernels measured {full.speedup:.2f}x fp32 here"
    )
    if reduced.exact and (reduced.speedup >= 1.0 or allow_slow):
        forced = "" if reduced.speedup >= 1.0 else " (forced: slower than fp32)"
        return Int8Scheme(
            "static-reduced-range",
            True,
            f"static int8 with reduced-range (7-bit) activations{forced}: {saturated}; 7-bit activations are "
            f"exact and measured {reduced.speedup:.1f}x fp32 here",
            (full, reduced),
        )
    if full.exact and allow_slow:
        return Int8Scheme("static", False, f"static int8 forced: {saturated}, no faster scheme here", (full, reduced))
    why = (
        f"7-bit activations measured {reduced.speedup:.2f}x fp32"
        if reduced.exact
        else f"7-bit activations are inexact too (relative error {reduced.relative_error:.3f})"
    )
    raise Int8Refused(
        f"int8 is refused on {cpu}: {saturated}, and {why}, so no int8 scheme is both exact and faster "
        f"than fp32 here. Use --precision fp32 (or auto); --allow-slow-precision exports int8 anyway."
    )
