"""The two exported graphs: image tower and text tower, each with its projection and L2 norm.

Traced with `torch.jit.trace` (torch.jit.script fails on transformers' configs), and optionally
compiled (export/compiled.py). A traced or compiled graph can silently bake in a shape, so every
one is checked against the eager model at several batch sizes and text lengths before it is written.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn
from transformers import CLIPModel

from clip_contract.precisions import lookup


def tower_dtype(precision: str) -> torch.dtype:
    """The dtype the towers of `precision` run in (int8: fp32, its image tower is quantized later)."""
    dtype: torch.dtype = getattr(torch, lookup(precision).tower_dtype)
    return dtype


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    vectors = vectors.float()
    return vectors / vectors.norm(p=2, dim=-1, keepdim=True)


class ImageEncoder(nn.Module):
    """PIXEL_VALUES float32 [B, 3, H, W] -> IMAGE_EMBEDS float32 [B, D], unit norm."""

    def __init__(self, model: CLIPModel, dtype: torch.dtype) -> None:
        super().__init__()
        self.vision_model = model.vision_model
        self.visual_projection = model.visual_projection
        self.dtype = dtype

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.vision_model(pixel_values=pixel_values.to(self.dtype)).pooler_output
        return _unit(self.visual_projection(pooled))


class TextEncoder(nn.Module):
    """INPUT_IDS int64 [L, T] -> TEXT_EMBEDS float32 [L, D], unit norm, pooled at the end token."""

    def __init__(self, model: CLIPModel) -> None:
        super().__init__()
        self.text_model = model.text_model
        self.text_projection = model.text_projection

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return _unit(self.text_projection(self.text_model(input_ids=input_ids).pooler_output))


def example_pixels(batch: int, size: int) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))


def example_ids(batch: int, length: int, model: CLIPModel) -> torch.Tensor:
    config: Any = model.config.text_config
    generator = torch.Generator().manual_seed(batch * 1000 + length)
    ids = torch.randint(1, min(config.vocab_size, 49406), (batch, length), generator=generator)
    ids[:, 0] = config.bos_token_id
    ids[:, -1] = config.eos_token_id
    return ids


def eager_towers(model: CLIPModel, precision: str, device: str = "cpu") -> tuple[ImageEncoder, TextEncoder]:
    """Both towers as eager modules in `precision`'s tower dtype (the model is converted in place)."""
    dtype = tower_dtype(precision)
    model = model.eval().to(device, dtype)
    return ImageEncoder(model, dtype).eval(), TextEncoder(model).eval()


def trace(
    model: CLIPModel, precision: str, device: str = "cpu"
) -> tuple[torch.jit.ScriptModule, torch.jit.ScriptModule]:
    """Trace both towers on `device` and check them against eager transformers; raises on any mismatch.

    Trace on the device that will run the graphs: the text graph bakes the device of its causal
    mask in (measured on an H200: a CPU-traced text graph fails on CUDA, the image graph does not).
    """
    image_encoder, text_encoder = eager_towers(model, precision, device)
    config: Any = model.config
    size = int(config.vision_config.image_size)
    context = int(config.text_config.max_position_embeddings)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about every shape-dependent branch; the checks below prove the graphs.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
        warnings.simplefilter("ignore", FutureWarning)
        traced_image = torch.jit.trace(image_encoder, example_pixels(2, size).to(device), check_trace=False)
        traced_text = torch.jit.trace(text_encoder, example_ids(2, context, model).to(device), check_trace=False)
    check_towers(model, precision, image_encoder, text_encoder, traced_image, traced_text, "traced", device)
    return traced_image, traced_text


def check_towers(
    model: CLIPModel,
    precision: str,
    image_encoder: ImageEncoder,
    text_encoder: TextEncoder,
    image_graph: Any,
    text_graph: Any,
    kind: str,
    device: str = "cpu",
) -> None:
    """`image_graph` and `text_graph` (None: not checked) against the eager towers at batch sizes
    1 and 3 and text lengths 4 and the full context: a graph can silently bake a shape in."""
    config: Any = model.config
    size = int(config.vision_config.image_size)
    context = int(config.text_config.max_position_embeddings)
    tolerance = lookup(precision).trace_tolerance
    with torch.inference_mode(False), torch.no_grad():
        for batch in (1, 3):
            if image_graph is not None:
                pixels = example_pixels(batch, size).to(device)
                _check(kind, "image", image_graph(pixels), image_encoder(pixels), tolerance)
            for length in (4, context) if text_graph is not None else ():
                ids = example_ids(batch, length, model).to(device)
                _check(kind, "text", text_graph(ids), text_encoder(ids), tolerance)


def _check(kind: str, tower: str, graph: torch.Tensor, eager: torch.Tensor, tolerance: float) -> None:
    difference = (graph - eager).abs().max().item()
    if graph.shape != eager.shape or difference > tolerance:
        raise RuntimeError(
            f"{kind} {tower} encoder differs from eager transformers: shape {tuple(graph.shape)} vs "
            f"{tuple(eager.shape)}, max abs diff {difference:.3g} > {tolerance}"
        )
