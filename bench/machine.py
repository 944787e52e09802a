"""What a benchmark result was measured on (export/hardware.py describes the machine), and a short
name for its class, which names the committed result files."""

from __future__ import annotations

from typing import Any

from export.hardware import describe

__all__ = ["describe", "machine_class"]


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
