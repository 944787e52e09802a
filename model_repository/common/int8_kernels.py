"""Whether this machine's int8 kernels are exact with full-range (0..255) activations.

An int8 image tower exported where they are (VNNI) keeps full-range activations; served on a CPU
whose kernels sum u8 x s8 pairs in int16 (AVX2 without VNNI) it would saturate and answer wrong
embeddings without an error, even where its compiled code runs (both AVX2 in torch's terms). The
image encoder runs this check at load and refuses instead. Tiny: a 16 x 64 by 64 x 16 matmul whose
every pair of products (2 x 255 x 127) overflows int16.
"""

from __future__ import annotations

import torch


def full_range_is_exact() -> bool:
    activations = torch.full((16, 64), 255, dtype=torch.uint8)
    weights = torch.full((16, 64), 127, dtype=torch.int8)
    packed = torch.ops.onednn.qlinear_prepack(weights, [16, 64])
    scales, zero_points = torch.ones(16), torch.zeros(16, dtype=torch.int64)
    result = torch.ops.onednn.qlinear_pointwise(
        activations, 1.0, 0, packed, scales, zero_points, None, 1.0, 0, torch.float32, "none", [], ""
    )
    return bool(torch.all(result == 255 * 127 * 64))
