"""What the benchmarks measure against: this machine's matmul peak and in-process eager
transformers, plus the sample images they send."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.measure import Result, closed_loop
from clip_contract import precisions


def _dtype(precision: str) -> torch.dtype:
    """The eager tower's dtype for a precision (its table's tower dtype)."""
    dtype: torch.dtype = getattr(torch, precisions.lookup(precision).tower_dtype)
    return dtype


IMAGE_GFLOP = 35.1


def matmul_peak_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def sample_png(seed: int) -> bytes:
    rgb = (np.random.default_rng(seed).random((480, 640, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def eager(model: Any, precision: str, batch: int, seconds: float) -> Result:
    """In-process transformers get_image_features, eager, at one batch size."""
    pixels = torch.randn(batch, 3, 224, 224, dtype=_dtype(precision))

    def call() -> None:
        with torch.inference_mode():
            model.get_image_features(pixel_values=pixels)

    return closed_loop(f"in-process eager {precision} batch {batch}", call, batch, 1, seconds)


def load_reference(checkpoint: Path, precision: str) -> Any:
    from transformers import CLIPModel

    return CLIPModel.from_pretrained(str(checkpoint), dtype=_dtype(precision)).eval()


def in_process_baseline(checkpoint: Path, seconds: float) -> Result:
    """In-process eager fp32 get_image_features at batch 8: what every ratio is against."""
    return eager(load_reference(checkpoint, "fp32"), "fp32", 8, seconds)


def reference_image_embedding(model: Any, checkpoint: Path, image: bytes) -> Any:
    """The reference's unit embedding of one encoded image: CLIPProcessor, then get_image_features."""
    from transformers import CLIPProcessor

    pixels = CLIPProcessor.from_pretrained(str(checkpoint))(images=Image.open(io.BytesIO(image)), return_tensors="pt")
    with torch.inference_mode():
        features = model.get_image_features(pixel_values=pixels["pixel_values"])
    vector = getattr(features, "pooler_output", features)[0].numpy()
    return vector / np.linalg.norm(vector)
