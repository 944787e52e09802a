"""int8 image tower: PT2E post-training quantization (torchao's X86InductorQuantizer: int8 weights
per channel, u8 activations per tensor, calibrated; full-range or 7-bit activations as the machine's
kernels need, export/int8_scheme.py), compiled by AOTInductor into oneDNN int8 kernels, behind an
accuracy gate.

Calibration images come from `--calibration-images DIR` or the set that ships in
export/calibration_images/. Every fourth image (sorted by name) is held out of calibration; on
those the gate compares the int8 tower with the fp32 one:
- mean cosine of the image embeddings >= MIN_MEAN_COSINE and the worst >= MIN_COSINE;
- top-1 agreement >= MIN_AGREEMENT: each held-out image ranked against the labels (labels.txt
  beside the images, or the shipped ones) with the fp32 text tower, the int8 tower's best label
  must be the fp32 tower's.
A model that falls short is not exported (QuantizationRejected, exit 2). The text tower stays fp32:
it runs on label-cache misses only, and prompts decide the ranking.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

DEFAULT_CALIBRATION = Path(__file__).with_name("calibration_images")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
HELD_OUT_EVERY = 4
MIN_IMAGES = 8
MIN_MEAN_COSINE = 0.99
MIN_COSINE = 0.97
MIN_AGREEMENT = 0.9
TEMPLATE = "a photo of {}."


class QuantizationRejected(RuntimeError):
    """The int8 tower failed the accuracy gate, or the calibration set is unusable."""


@dataclass(frozen=True)
class GateResult:
    held_out: int
    mean_cosine: float
    min_cosine: float
    top1_agreement: float
    labels: int

    def passed(self) -> bool:
        return (
            self.mean_cosine >= MIN_MEAN_COSINE
            and self.min_cosine >= MIN_COSINE
            and self.top1_agreement >= MIN_AGREEMENT
        )

    def summary(self) -> dict[str, Any]:
        return {
            **{key: round(value, 5) if isinstance(value, float) else value for key, value in asdict(self).items()},
            "thresholds": {"mean_cosine": MIN_MEAN_COSINE, "min_cosine": MIN_COSINE, "top1_agreement": MIN_AGREEMENT},
            "passed": self.passed(),
        }


def calibration_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(calibration, held-out) image files of `folder`."""
    files = sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < MIN_IMAGES:
        raise QuantizationRejected(f"{folder} holds {len(files)} images; int8 calibration needs at least {MIN_IMAGES}")
    held = [path for index, path in enumerate(files) if index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    return [path for path in files if path not in held], held


def labels_for(folder: Path) -> list[str]:
    path = folder / "labels.txt"
    if not path.is_file():
        path = DEFAULT_CALIBRATION / "labels.txt"
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def pixels(files: list[Path], checkpoint: Path) -> torch.Tensor:
    """The reference preprocessing (CLIPImageProcessor of the checkpoint), as served."""
    from PIL import Image
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor.from_pretrained(str(checkpoint))
    images = []
    for path in files:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return processor(images=images, return_tensors="pt")["pixel_values"]


def quantize_image(
    encoder: torch.nn.Module, calibration: torch.Tensor, max_batch: int, reduce_range: bool
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The image tower with int8 weights and activations, observers set by `calibration`;
    `reduce_range`: activations in 7 bits, for kernels that saturate on 8 (export/int8_scheme.py).
    Two forms of the one calibration: weights folded to int8 (what Inductor compiles) and weights
    kept in fp32 behind their quantize/dequantize pair (what OpenVINO's converter reads)."""
    import copy

    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from export.compiled import batch_dim

    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config(reduce_range=reduce_range))
    with torch.no_grad():
        program = torch.export.export(encoder, (calibration[:2],), dynamic_shapes=[{0: batch_dim(max_batch)}])
        prepared = prepare_pt2e(program.module(), quantizer)
        for start in range(0, len(calibration), 8):
            prepared(calibration[start : start + 8])
        unfolded: torch.nn.Module = convert_pt2e(copy.deepcopy(prepared), fold_quantize=False)
        folded: torch.nn.Module = convert_pt2e(prepared)
    return folded, unfolded


def gate(
    fp32_image: Any, int8_image: Any, text_encoder: Any, held_out: torch.Tensor, label_ids: torch.Tensor
) -> GateResult:
    """Compare the int8 image tower with the fp32 one on the held-out pixels."""
    with torch.no_grad():
        reference, quantized = fp32_image(held_out).float(), int8_image(held_out).float()
        texts = text_encoder(label_ids).float()
    cosine = torch.nn.functional.cosine_similarity(reference, quantized, dim=-1)
    agreement = ((reference @ texts.T).argmax(-1) == (quantized @ texts.T).argmax(-1)).float().mean()
    return GateResult(len(held_out), float(cosine.mean()), float(cosine.min()), float(agreement), len(texts))


def tokenize(labels: list[str], checkpoint: Path) -> torch.Tensor:
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(checkpoint))
    prompts = [TEMPLATE.format(label) for label in labels]
    return tokenizer(prompts, padding=True, return_tensors="pt")["input_ids"]
