"""Zero-shot accuracy of a CLIP checkpoint on held-out shape pictures, in process.

    python -m demo.evaluate [--model models/clip-demo] [--seed 12345] [--per-class 10]

For training feedback; the acceptance test measures the same through the served Classify.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import CLIPModel, CLIPProcessor

from demo.shapes import CLASSES, dataset
from demo.train import DEFAULT_OUT, HELD_OUT_TEMPLATES

EVAL_SEED = 12345


@torch.no_grad()
def accuracy(model_dir: Path, seed: int = EVAL_SEED, per_class: int = 10) -> dict[str, float]:
    model = CLIPModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    processor = CLIPProcessor.from_pretrained(str(model_dir))
    items = dataset(seed, per_class)
    pixels = processor.image_processor([image for image, _ in items], return_tensors="pt")["pixel_values"]
    images = torch.nn.functional.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
    truth = torch.tensor([CLASSES.index(label) for _, label in items])
    scores = {}
    for template in HELD_OUT_TEMPLATES:
        tokens = processor.tokenizer([template.replace("{}", c) for c in CLASSES], padding=True, return_tensors="pt")
        texts = torch.nn.functional.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)
        scores[template] = float(((images @ texts.T).argmax(dim=1) == truth).float().mean())
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=EVAL_SEED)
    parser.add_argument("--per-class", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(accuracy(args.model, args.seed, args.per_class)))


if __name__ == "__main__":
    main()
