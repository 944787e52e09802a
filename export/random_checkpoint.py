"""Random-weight CLIP checkpoints in the Hub layout, for tests and benchmarks.

    python -m export.random_checkpoint --shape tiny --out build/checkpoints/tiny
    python -m export.random_checkpoint --shape vit-b-16 --out build/checkpoints/vit-b-16

`vit-b-16` has the exact shapes of openai/clip-vit-base-patch16 (speed and memory do not depend
on weight values); `tiny` keeps the real tokenizer, image size and pipeline but is ~100x smaller.
The logit scale is set in the weights to ln(100), as in the released checkpoint, while the config
keeps the 2.6592 init value, so an exporter that reads the config instead of the weights shows.
`--shortest-edge` resizes to another side than the 224 crop (e.g. 256, as many checkpoints do).

`cached` and `cached_export` build them once under build/test-cache and reuse them: what the
tests and the benchmarks run on (exports are deterministic per shape and settings).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

TOKENIZER_DIR = Path(__file__).with_name("tokenizer_data")
CACHE = Path(__file__).resolve().parents[1] / "build" / "test-cache"
RELEASED_LOGIT_SCALE = math.log(100.0)
CROP_SIZE = 224  # the vision tower's input side, as in the released ViT-B/16

SHAPES: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "text": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
        "vision": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, patch_size=32),
        "model": dict(projection_dim=16),
    },
    "vit-b-16": {
        "text": dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
        "vision": dict(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=16
        ),
        "model": dict(projection_dim=512),
    },
}


def clip_config(shape: str) -> CLIPConfig:
    spec = SHAPES[shape]
    text = dict(
        vocab_size=49408,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        **spec["text"],
    )
    vision = dict(image_size=CROP_SIZE, num_channels=3, **spec["vision"])
    return CLIPConfig(text_config=text, vision_config=vision, **spec["model"])


def save_tokenizer_and_processor(out: Path, shortest_edge: int = CROP_SIZE) -> None:
    """The real CLIP BPE files and the released preprocessing constants."""
    for item in TOKENIZER_DIR.iterdir():
        if item.is_file():
            shutil.copy2(item, out / item.name)
    crop = {"height": CROP_SIZE, "width": CROP_SIZE}
    CLIPImageProcessor(size={"shortest_edge": shortest_edge}, crop_size=crop).save_pretrained(str(out))


def build(shape: str, out: Path, seed: int = 0, shortest_edge: int = CROP_SIZE) -> Path:
    torch.manual_seed(seed)
    model = CLIPModel(clip_config(shape)).eval()
    with torch.no_grad():
        model.logit_scale.fill_(RELEASED_LOGIT_SCALE)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    save_tokenizer_and_processor(out, shortest_edge)
    (out / "README.md").write_text(
        f"Random-weight CLIP ({shape} shapes, seed {seed}, resize {shortest_edge}, crop {CROP_SIZE}) for tests; "
        "it classifies nothing.\n"
    )
    return out


def cached(shape: str, shortest_edge: int = CROP_SIZE) -> Path:
    """A random-weight checkpoint of `shape` ("tiny" or "vit-b-16"), built on first use."""
    name = shape if shortest_edge == CROP_SIZE else f"{shape}-resize{shortest_edge}"
    folder = CACHE / "checkpoints" / name
    if not (folder / "model.safetensors").is_file():
        build(shape, folder, shortest_edge=shortest_edge)
    return folder


def cached_export(shape: str, precision: str = "fp32", **settings: object) -> Path:
    """An exported repository of `cached(shape)`; always re-exported, so that changes to the model
    code are picked up."""
    from export import repository
    from export.pipeline import export

    variant = "".join(f"-{key}{value}" for key, value in sorted(settings.items()) if value is not None)
    out = CACHE / "repositories" / f"{shape}-{precision}{variant}"
    export(str(cached(shape)), out, precision, repository.Settings(**settings))  # type: ignore[arg-type]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shortest-edge", type=int, default=CROP_SIZE, help="resize side (%(default)s)")
    args = parser.parse_args(argv)
    print(json.dumps({"checkpoint": str(build(args.shape, args.out, args.seed, args.shortest_edge))}))


if __name__ == "__main__":
    main()
