"""int8 towers: PT2E post-training quantization (torchao's X86InductorQuantizer: int8 weights
per channel, u8 activations per tensor, calibrated; full-range or 7-bit activations as the machine's
kernels need, export/int8_scheme.py), compiled by AOTInductor into oneDNN int8 kernels, each tower
behind its own accuracy gate.

Calibration images come from `--calibration-images DIR` or the set that ships in
export/calibration_images/. Every fourth image (sorted by name) is held out of calibration; on
those the gate compares the int8 tower with the fp32 one:
- mean cosine of the image embeddings >= MIN_MEAN_COSINE and the worst >= MIN_COSINE;
- top-1 agreement >= MIN_AGREEMENT: each held-out image ranked against the labels (labels.txt
  beside the images, or the shipped ones) with the fp32 text tower, the int8 tower's best label
  must be the fp32 tower's.
An image tower that falls short is not exported (QuantizationRejected, exit 2).

The text tower is calibrated on prompts: the labels (labels.txt) in CALIBRATION_TEMPLATES. Its gate
holds out the prompts the image gate ranks with (TEMPLATE, never calibrated on): the same cosine
bars between the int8 and fp32 text embeddings, also at batch 1 and padded to the full context (a
compiled graph can bake a shape in), and the same top-1 agreement, each image of the folder (none
is text calibration) ranked against the labels by the int8 and by the fp32 text tower. The text
tower runs on every cold label set and every new text (docs/benchmarks.md: 3.0x fp32 in process
on the AMD Zen 4 class). One that falls short is served in fp32 instead, the reason in the
manifest: the image tower's gain does not depend on it.
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
# The text gate's ties: where fp32 scores the int8 tower's pick within this many logits (at the
# model's logit scale, as Classify scores) of its own best, fp32 itself barely tells them apart
# (probabilities within 10 %), and the pick counts as agreeing. Why the text gate needs it: an
# int8 text tower moves every label's score at once, and on random test weights the prompts'
# embeddings are 0.96 alike, so fp32's top two labels are 0.002 apart in cosine (median, ViT-B/16
# shapes) and flips at cosine 0.9995 are ties.
TIE_LOGITS = 0.1
TEMPLATE = "a photo of {}."
# Prompts the int8 text tower is calibrated on (TEMPLATE is held out for its gate): the shapes of
# what clients send, a bare label, short and long templates.
CALIBRATION_TEMPLATES = (
    "{}",
    "a picture of a {}.",
    "a close-up photo of the {}.",
    "a blurry photo of a {}, taken outdoors at night.",
    "an illustration of {}, drawn by hand in pencil on white paper.",
    "itap of my {}",
)
CALIBRATION_BATCH = 16


class QuantizationRejected(RuntimeError):
    """The int8 tower failed the accuracy gate, or the calibration set is unusable."""


@dataclass(frozen=True)
class GateResult:
    held_out: int
    mean_cosine: float
    min_cosine: float
    top1_agreement: float
    labels: int
    ties: int | None = None  # the text gate's: picks that differ from fp32's within TIE_LOGITS

    def passed(self) -> bool:
        return (
            self.mean_cosine >= MIN_MEAN_COSINE
            and self.min_cosine >= MIN_COSINE
            and self.top1_agreement >= MIN_AGREEMENT
        )

    def summary(self) -> dict[str, Any]:
        return {
            **{
                key: round(value, 5) if isinstance(value, float) else value
                for key, value in asdict(self).items()
                if value is not None
            },
            "thresholds": {
                "mean_cosine": MIN_MEAN_COSINE,
                "min_cosine": MIN_COSINE,
                "top1_agreement": MIN_AGREEMENT,
                **({"tie_logits": TIE_LOGITS} if self.ties is not None else {}),
            },
            "passed": self.passed(),
        }


@dataclass(frozen=True)
class Calibration:
    """What both towers are calibrated and gated on: the images of a folder (every fourth held out)
    and its labels, as held-out prompts (TEMPLATE) and as calibration prompts."""

    folder: Path
    images: int  # calibrated on
    pixels: torch.Tensor
    held_out_pixels: torch.Tensor
    label_ids: torch.Tensor
    prompts: list[torch.Tensor]

    @classmethod
    def load(cls, folder: Path, checkpoint: Path) -> Calibration:
        calibrate, held_out = calibration_files(folder)
        labels = labels_for(folder)
        return cls(
            folder,
            len(calibrate),
            pixels(calibrate, checkpoint),
            pixels(held_out, checkpoint),
            tokenize(labels, checkpoint),
            calibration_prompts(labels, checkpoint),
        )


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

    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from export.compiled import batch_dim

    prepared = _calibrated(encoder, calibration, {0: batch_dim(max_batch)}, reduce_range, 8)
    with torch.no_grad():
        unfolded: torch.nn.Module = convert_pt2e(copy.deepcopy(prepared), fold_quantize=False)
        folded: torch.nn.Module = convert_pt2e(prepared)
    return folded, unfolded


def quantize_text(
    encoder: torch.nn.Module, calibration: list[torch.Tensor], max_batch: int, context: int, reduce_range: bool
) -> torch.nn.Module:
    """The text tower with int8 weights and activations (folded, for Inductor), observers set by the
    `calibration` batches of token ids; its batch and its text length stay dynamic."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from export.compiled import batch_dim, length_dim

    dynamic = {0: batch_dim(max_batch), 1: length_dim(context)}
    prepared = _calibrated(encoder, calibration, dynamic, reduce_range, 0)
    with torch.no_grad():
        folded: torch.nn.Module = convert_pt2e(prepared)
    return folded


def _calibrated(
    encoder: torch.nn.Module, calibration: Any, dynamic: dict[int, Any], reduce_range: bool, batch: int
) -> torch.nn.Module:
    """`encoder` exported with `dynamic` dims, observed on `calibration`: a tensor run `batch`
    rows at a time, or (batch 0) a list of batches run as they are."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config(reduce_range=reduce_range))
    batches = calibration
    if batch:
        batches = [calibration[start : start + batch] for start in range(0, len(calibration), batch)]
    with torch.no_grad():
        program = torch.export.export(encoder, (batches[0][:2],), dynamic_shapes=[dynamic])
        prepared: torch.nn.Module = prepare_pt2e(program.module(), quantizer)
        for rows in batches:
            prepared(rows)
    return prepared


def gate(
    fp32_image: Any, int8_image: Any, text_encoder: Any, held_out: torch.Tensor, label_ids: torch.Tensor
) -> GateResult:
    """Compare the int8 image tower with the fp32 one on the held-out pixels."""
    with torch.no_grad():
        reference, quantized = fp32_image(held_out).float(), int8_image(held_out).float()
        texts = text_encoder(label_ids).float()
    cosine = torch.nn.functional.cosine_similarity(reference, quantized, dim=-1)
    agreeing = int(((reference @ texts.T).argmax(-1) == (quantized @ texts.T).argmax(-1)).sum())
    agreement = agreeing / len(held_out)  # exact: 9 of 10 is 0.9, which float32's mean is not
    return GateResult(len(held_out), float(cosine.mean()), float(cosine.min()), float(agreement), len(texts))


def text_gate(
    fp32_text: Any,
    int8_text: Any,
    label_ids: torch.Tensor,
    image_embeds: torch.Tensor,
    context: int,
    pad_id: int,
    logit_scale: float,
) -> GateResult:
    """Compare the int8 text tower with the fp32 one on the held-out prompts `label_ids`, as a batch,
    the first alone and all padded to `context` (the pad token ends no prompt early: the tower
    pools at the first end token); `image_embeds` (the fp32 image tower's, of images the text tower
    was not calibrated on) ranked against them by each, a pick within TIE_LOGITS of fp32's best
    (scores times `logit_scale`) agreeing. `held_out` counts prompts, `labels` the images ranked."""
    padded = torch.full((len(label_ids), context), pad_id, dtype=label_ids.dtype)
    padded[:, : label_ids.shape[1]] = label_ids
    with torch.no_grad():
        reference = fp32_text(label_ids).float()
        cosines = [
            torch.nn.functional.cosine_similarity(reference[: len(ids)], int8_text(ids).float(), dim=-1)
            for ids in (label_ids, label_ids[:1], padded)
        ]
        quantized = int8_text(label_ids).float()
    scores = logit_scale * image_embeds @ reference.T
    best, pick = scores.max(-1).values, (image_embeds @ quantized.T).argmax(-1)
    behind = best - scores.gather(1, pick[:, None])[:, 0]  # 0 where int8 picks fp32's best
    agreement = int((behind <= TIE_LOGITS).sum()) / len(image_embeds)
    ties = int(((behind > 0) & (behind <= TIE_LOGITS)).sum())
    every = torch.cat(cosines)
    return GateResult(
        len(label_ids), float(cosines[0].mean()), float(every.min()), float(agreement), len(image_embeds), ties
    )


def tokenize(labels: list[str], checkpoint: Path) -> torch.Tensor:
    """The held-out prompts: each label in TEMPLATE, as one padded batch."""
    return _tokens([TEMPLATE.format(label) for label in labels], _tokenizer(checkpoint))


def calibration_prompts(labels: list[str], checkpoint: Path) -> list[torch.Tensor]:
    """The text tower's calibration: each label in every CALIBRATION_TEMPLATES prompt, in batches of
    CALIBRATION_BATCH, each padded to its own longest (as served)."""
    tokenizer = _tokenizer(checkpoint)
    prompts = [template.format(label) for template in CALIBRATION_TEMPLATES for label in labels]
    return [
        _tokens(prompts[start : start + CALIBRATION_BATCH], tokenizer)
        for start in range(0, len(prompts), CALIBRATION_BATCH)
    ]


def _tokenizer(checkpoint: Path) -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(checkpoint))


def _tokens(prompts: list[str], tokenizer: Any) -> torch.Tensor:
    ids: torch.Tensor = tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")["input_ids"]
    return ids
