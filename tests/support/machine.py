"""This machine's class, read from its CPU flags, for tests that check the path the class takes:
an independent expectation to hold the exporter's own measurements against."""

from __future__ import annotations

import os

from export import hardware

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below every VNNI level: the kernels then run without VNNI.
ISA_CAPS_WITHOUT_VNNI = ("SSE41", "AVX", "AVX2", "AVX512_CORE")
# oneDNN's AVX2 kernels (no VNNI) and MKL's AVX2 fp32 on any x86 CPU: how an AVX2-only CPU's int8
# numerics are reproduced on a VNNI machine (it reproduced the EPYC's gate figures exactly).
AVX2_KERNELS = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def int8_kernels_have_vnni() -> bool:
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).upper()
    if cap in ISA_CAPS_WITHOUT_VNNI:
        return False
    return any(flag in hardware.cpu_info()["features"] for flag in VNNI_FLAGS)


def expected_int8_scheme() -> str:
    """The scheme this class must take: full-range static int8 with VNNI, 7-bit activations without."""
    return "static" if int8_kernels_have_vnni() else "static-reduced-range"


def describe() -> str:
    info = hardware.cpu_info()
    return f"{info['model']} ({', '.join(info['features'])}; torch {hardware.torch_capability()})"
