"""The compiled text tower: for int8, quantized behind its own accuracy gate (export/quantize.py);
otherwise, or where that gate fails, in the precision's float dtype, checked against eager.

Why int8 text too: the text tower runs on every cold label set and every new text, compute-bound
on the CPU, and quantized it ran 3.0x fp32 in process on the AMD Zen 4 class (docs/benchmarks.md).
Why a failed gate is no refused export: the int8 image tower's gain stands on its own, so the text
tower is then served as it was before (fp32), with the reason in the manifest and the log.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clip_contract.precisions import lookup
from export import compiled, encoders, quantize


@dataclass(frozen=True)
class TextTower:
    dtype: str  # "int8", or the precision's float tower dtype name ("fp32", "bf16", ...)
    reason: str  # why this dtype ("" where the precision has no choice)
    gate: dict[str, Any] | None  # int8's gate figures, where it was tried


def float_dtype(precision: str) -> str:
    """The text tower's dtype when it is not int8: the precision's own (int8's fallback: fp32)."""
    spec = lookup(precision)
    return spec.tower_dtype.replace("float", "fp") if spec.quantized else spec.name


def compile_text_tower(
    model: Any,
    precision: str,
    text_encoder: Any,
    image_encoder: Any,
    calibration: quantize.Calibration | None,
    reduce_range: bool,
    max_batch: int,
    path: Path,
    seconds: dict[str, float],
) -> TextTower:
    """The text tower's package at `path`: int8 where `calibration` is given and the quantized tower
    passes its gate (as a graph and as the compiled package), else float."""
    float_name = float_dtype(precision)
    if calibration is None:
        _compile_float(model, precision, text_encoder, image_encoder, max_batch, path, seconds)
        return TextTower(float_name, "", None)
    context = int(model.config.text_config.max_position_embeddings)
    pad_id = int(model.config.text_config.eos_token_id)
    logit_scale = float(model.logit_scale.detach().exp())
    started = time.perf_counter()
    quantized = quantize.quantize_text(text_encoder, calibration.prompts, max_batch, context, reduce_range)
    seconds["quantize_text"] = round(time.perf_counter() - started, 1)
    # Every image ranks the prompts, calibration images too: the text tower never saw them, and
    # more images make the agreement finer than 1/12 (the random test models' ties are close).
    with torch.no_grad():
        pixels = torch.cat([calibration.pixels, calibration.held_out_pixels])
        image_embeds = torch.cat([image_encoder(rows).float() for rows in pixels.split(8)])

    def gated(tower: Any) -> quantize.GateResult:
        return quantize.text_gate(
            text_encoder, tower, calibration.label_ids, image_embeds, context, pad_id, logit_scale
        )

    result = gated(quantized)
    gate: dict[str, Any] = {"calibration_prompts": sum(len(batch) for batch in calibration.prompts), **result.summary()}
    problem = None if result.passed() else _rejection(result, calibration.folder, "quantized graph")
    if problem is None:
        started = time.perf_counter()
        # weights inside the package: int8's are prepacked (opaque) for its kernels
        compiled.compile_text(quantized, encoders.example_ids(2, 8, model), max_batch, context, path, False)
        seconds["compile_text"] = round(time.perf_counter() - started, 1)
        result = gated(compiled.load(path))
        gate["compiled"] = result.summary()
        problem = None if result.passed() else _rejection(result, calibration.folder, "compiled package")
    if problem is None:
        return TextTower(
            "int8",
            f"int8 text tower: passed its gate on {result.held_out} held-out prompts (mean cosine "
            f"{result.mean_cosine:.4f}, worst {result.min_cosine:.4f}, top-1 agreement {result.top1_agreement:.0%} "
            f"with {result.ties} ties)",
            gate,
        )
    print(f"export: {problem}; the text tower is served in {float_name}", file=sys.stderr)
    _compile_float(model, precision, text_encoder, image_encoder, max_batch, path, seconds)
    return TextTower(float_name, f"{float_name} text tower: {problem}", gate)


def _compile_float(
    model: Any,
    precision: str,
    text_encoder: Any,
    image_encoder: Any,
    max_batch: int,
    path: Path,
    seconds: dict[str, float],
) -> None:
    context = int(model.config.text_config.max_position_embeddings)
    started = time.perf_counter()
    compiled.compile_text(text_encoder, encoders.example_ids(2, 8, model), max_batch, context, path)
    seconds["compile_text"] = round(time.perf_counter() - started, 1)
    encoders.check_towers(model, precision, image_encoder, text_encoder, None, compiled.load(path), "compiled")


def _rejection(result: quantize.GateResult, folder: Path, what: str) -> str:
    return (
        f"the int8 text tower ({what}) failed its accuracy gate on {result.held_out} held-out prompts of the "
        f"labels of {folder}: mean cosine {result.mean_cosine:.4f} (needs {quantize.MIN_MEAN_COSINE}), worst "
        f"{result.min_cosine:.4f} (needs {quantize.MIN_COSINE}), top-1 agreement with fp32 "
        f"{result.top1_agreement:.0%} with {result.ties} ties (needs {quantize.MIN_AGREEMENT:.0%})"
    )
