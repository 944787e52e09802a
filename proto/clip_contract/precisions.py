"""Every precision clip-serve exports, and what each one means for the exporter and the service.

A new precision is one row here, plus its traced dtype in the exporter (`export/encoders.py`
maps `tower_dtype` names to torch dtypes) and its value in the proto's `Precision` enum.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Precision:
    name: str  # as on the command line, in the manifest and in the ensembles' `precision` parameter
    wire_name: str  # its value in clip.v1's Precision enum (GetModelInfo)
    tower_dtype: str  # torch dtype the eager and TorchScript towers run in
    # int8 towers (calibrated, accuracy-gated): the image tower, and the text tower where it
    # passes its own gate (else it runs in tower_dtype)
    quantized: bool
    compiled_only: bool  # exists only as an AOTInductor package (no TorchScript of its own)
    trace_tolerance: float  # largest |traced or compiled - eager| at `tower_dtype` the exporter accepts
    # The CPU features (any one) that make it native; () for fp32, and for int8, whose kernels are
    # measured instead (export/int8_scheme.py).
    native_cpu_features: tuple[str, ...]

    @property
    def reduced(self) -> bool:
        """A float precision below fp32 that is chosen by measuring its matmul here."""
        return bool(self.native_cpu_features)


FP32 = Precision("fp32", "PRECISION_FP32", "float32", False, False, 1e-5, ())
BF16 = Precision("bf16", "PRECISION_BF16", "bfloat16", False, False, 2e-2, ("avx512_bf16", "amx_bf16"))
FP16 = Precision("fp16", "PRECISION_FP16", "float16", False, False, 5e-3, ("avx512_fp16", "amx_fp16"))
INT8 = Precision("int8", "PRECISION_INT8", "float32", True, True, 1e-5, ())

PRECISIONS = {precision.name: precision for precision in (FP32, BF16, FP16, INT8)}
NAMES = tuple(PRECISIONS)
AUTO = "auto"  # not a precision: the exporter's choice of the fastest one on this machine


def lookup(name: str) -> Precision:
    """The precision called `name`, or a ValueError naming the ones there are."""
    try:
        return PRECISIONS[name]
    except KeyError:
        raise ValueError(f"unknown precision {name!r}; one of {', '.join(NAMES)}") from None
