"""Train the bundled demo CLIP: a tiny CLIPModel that really classifies coloured shapes offline.

    python -m demo.train [--out models/clip-demo] [--steps 3500] [--seed 0]

Pictures come from demo.shapes (4 shapes x 4 colours), captions from varied templates with the
real CLIP BPE tokenizer (export/tokenizer_data). Deterministic from the seed; a few minutes on
2 CPU cores. The checkpoint is saved in the Hub layout with fp16 weights, a model card, and the
marker file that makes the service report it as the demo variant.

Prompts held back from training, so that the evaluation is zero-shot in wording too:
"a drawing of a {}." and the plain class name "{}" never occur verbatim in training captions.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

from demo.shapes import CLASSES, COLOURS, SHAPES, render, sample
from export.checkpoint import DEMO_MARKER
from export.random_checkpoint import save_tokenizer_and_processor

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "models" / "clip-demo"
TOKENIZER_DIR = ROOT / "export" / "tokenizer_data"
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
TRAIN_TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of the {}.",
    "a {} on a plain background.",
    "the {}.",
    "a small {}.",
    "a big {}.",
    "a {w} of a {}.",
    "a {w} {w} {}.",
    "{w} {}",
    "there is a {} in the {w}.",
    "this is a {}",
    "a {} shape",
    "one {}.",
)
HELD_OUT_TEMPLATES = ("a drawing of a {}.", "{}")
HELD_OUT_WORDS = {"drawing"} | set(SHAPES) | set(COLOURS)


def config() -> CLIPConfig:
    text = dict(
        vocab_size=49408,
        max_position_embeddings=77,
        hidden_size=32,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    vision = dict(
        image_size=224, patch_size=32, hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)


def filler_words(tokenizer: CLIPTokenizer) -> list[str]:
    """Whole-word vocabulary entries, to teach the text tower to ignore words it cannot know."""
    words = [token[:-4] for token in tokenizer.get_vocab() if token.endswith("</w>")]
    return sorted(w for w in words if w.isalpha() and w.isascii() and 3 <= len(w) <= 9 and w not in HELD_OUT_WORDS)


def caption(label: str, rng: np.random.Generator, words: list[str]) -> str:
    template = TRAIN_TEMPLATES[rng.integers(len(TRAIN_TEMPLATES))]
    while "{w}" in template:
        template = template.replace("{w}", words[rng.integers(len(words))], 1)
    return template.replace("{}", label)


def render_pool(rng: np.random.Generator, per_class: int) -> tuple[NDArray[Any], NDArray[Any]]:
    """Pictures rendered once up front (rendering costs more than a training step), uint8 NHWC."""
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    images = np.stack([np.asarray(render(sample(rng, CLASSES[label]), rng)) for label in labels])
    return images, labels


def pixels(images: NDArray[Any], rng: np.random.Generator) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW, randomly mirrored left-right (upright shapes stay upright)."""
    array = images.astype(np.float32) / 255.0
    mirror = rng.random(len(array)) < 0.5
    array[mirror] = array[mirror, :, ::-1]
    return torch.from_numpy(((array - MEAN) / STD).transpose(0, 3, 1, 2).copy())


def train(
    out: Path, steps: int, seed: int, batch: int = 64, per_class: int = 200, refresh: int = 24
) -> dict[str, float]:
    """`refresh` pool pictures are re-rendered every step, so the model sees ~`refresh x steps` distinct
    pictures without paying a full render per sample (a fixed pool overfits: 92% held out)."""
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    rng = np.random.default_rng(seed)
    tokenizer = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR))
    words = filler_words(tokenizer)
    pool, pool_labels = render_pool(rng, per_class)
    model = CLIPModel(config()).train()
    # No weight decay on the temperature, norms, biases and embeddings (as in CLIP's training).
    decayed = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    kept = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decayed, "weight_decay": 0.05}, {"params": kept, "weight_decay": 0.0}], lr=1e-3
    )
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    started, loss_value = time.monotonic(), float("nan")
    for step in range(steps):
        for index in rng.integers(len(pool), size=refresh):
            pool[index] = np.asarray(render(sample(rng, CLASSES[pool_labels[index]]), rng))
        chosen = rng.integers(len(pool), size=batch)
        targets = torch.from_numpy(pool_labels[chosen])
        images = pixels(pool[chosen], rng)
        texts = [caption(label, rng, words) for label in CLASSES]
        tokens = tokenizer(texts, padding=True, return_tensors="pt")
        image_embeds = F.normalize(model.get_image_features(pixel_values=images).pooler_output, dim=-1)
        text_embeds = F.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)
        logits = model.logit_scale.exp() * image_embeds @ text_embeds.T  # [batch, classes]
        image_loss = F.cross_entropy(logits, targets)
        # text -> image: each class caption should pick out the pictures of its class
        log_probs = logits.T.log_softmax(dim=1)
        positives = F.one_hot(targets, len(CLASSES)).T.bool()
        present = positives.any(dim=1)
        text_loss = -torch.logsumexp(log_probs.masked_fill(~positives, -1e9), dim=1)[present].mean()
        loss = (image_loss + text_loss) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        loss_value = float(loss.detach())
        if step % 100 == 0 or step == steps - 1:
            print(
                f"step {step:5d}  loss {loss_value:.4f}  scale {model.logit_scale.exp().item():6.2f}  "
                f"{time.monotonic() - started:6.1f}s",
                flush=True,
            )
    save(model.eval(), out, seed, steps)
    return {"loss": loss_value, "seconds": time.monotonic() - started}


MODEL_CARD = """# clip-serve demo model (coloured shapes)

A tiny CLIP (`transformers.CLIPModel`: ViT with 4 layers, hidden 64, patch 32 at 224 px; text
transformer with 2 layers, hidden 32; projection 32; ~2.0 M parameters, stored in fp16) trained
from scratch by `python -m demo.train` (seed {seed}, {steps} steps, a few minutes on 2 CPU cores)
on synthetic pictures from `demo/shapes.py`, captioned with varied templates and the real CLIP BPE
tokenizer.

**What it is:** something for clip-serve to serve offline that really classifies, so a newcomer's
first run shows meaningful output, and so tests can measure end-to-end zero-shot accuracy.

**What it knows:** 16 classes, {{red, green, blue, yellow}} x {{circle, square, triangle, star}},
one to six shapes per picture on grey backgrounds. `tests/test_demo_model.py` asserts >= 95 %
top-1 through the served Classify on held-out pictures (another seed) with prompts it never saw
verbatim ("a drawing of a {{}}." and the plain class name).

**What it is not:** a general image model. It has never seen a photograph, knows no other word
than its colours and shapes, and will confidently give one of its 16 answers for any picture.
For real use serve `openai/clip-vit-base-patch16`.
"""


def save(model: CLIPModel, out: Path, seed: int, steps: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(str(out), safe_serialization=True)  # fp16 storage keeps the file small
    save_tokenizer_and_processor(out)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(str(out))
    (out / "README.md").write_text(MODEL_CARD.format(seed=seed, steps=steps))
    (out / DEMO_MARKER).write_text(
        json.dumps(
            {
                "what": "clip-serve demo model: coloured shapes only",
                "classes": list(CLASSES),
                "trained_by": "python -m demo.train",
                "seed": seed,
                "steps": steps,
                "held_out_templates": list(HELD_OUT_TEMPLATES),
            },
            indent=2,
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=3500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(train(args.out, args.steps, args.seed)))


if __name__ == "__main__":
    main()
