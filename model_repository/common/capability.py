"""Whether compiled encoder code runs on this CPU. An AOTInductor package holds machine code for
the torch capability level it was compiled on; a CPU below it would die on an illegal instruction
in the middle of a request. Pure Python: unit-tested without Triton."""

from __future__ import annotations

# torch's x86 capability levels (torch.backends.cpu.get_cpu_capability()), lowest first.
CAPABILITY_ORDER = ("DEFAULT", "AVX2", "AVX512")


def runs_code_for(compiled_for: str, here: str) -> bool:
    """Whether a CPU of capability `here` runs code compiled for capability `compiled_for`."""
    if compiled_for in CAPABILITY_ORDER and here in CAPABILITY_ORDER:
        return CAPABILITY_ORDER.index(here) >= CAPABILITY_ORDER.index(compiled_for)
    return compiled_for == here
