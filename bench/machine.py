"""What a benchmark result was measured on: CPU model, the instruction-set features that decide
which precision runs natively, torch's own view of them, cores. Recorded in every result file."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

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
    "amx_tile",
)


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


def describe() -> dict[str, Any]:
    """The machine, for a result file."""
    info: dict[str, Any] = {"arch": platform.machine(), "cores": os.cpu_count(), **cpu_info()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["mkldnn_bf16_supported"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (ImportError, AttributeError, RuntimeError):
        pass
    return info


def machine_class(info: dict[str, Any] | None = None) -> str:
    """A short name for the kind of CPU: which precisions it runs natively."""
    info = info or describe()
    features = set(info.get("features", []))
    if "amx_bf16" in features:
        return "amx"
    if "avx512_bf16" in features:
        return "avx512bf16"
    if "avx512f" in features:
        return "avx512"
    return "avx2"
