"""Export a CLIP checkpoint to a Triton model repository.

    python -m export --model openai/clip-vit-base-patch16 --out build/model_repository
    python -m export --model path/to/local/checkpoint --precision bf16

The checkpoint is a Hugging Face Hub id (fetched into the HF cache) or a local folder in the
Hub's layout: config.json, model.safetensors or pytorch_model.bin, vocab.json, merges.txt,
tokenizer_config.json, preprocessor_config.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from export import checkpoint as checkpoints
from export import encoders, repository

DEFAULT_MODEL = "openai/clip-vit-base-patch16"
DEFAULT_OUT = Path("build/model_repository")


def model_facts(model: Any, preprocessor: dict[str, Any]) -> repository.ModelFacts:
    vision = model.config.vision_config
    size = preprocessor.get("size", {"shortest_edge": vision.image_size})
    crop = preprocessor.get("crop_size", {"height": vision.image_size})
    logit_scale = float(model.logit_scale.detach().float().item())  # the weights', not the config's
    if not math.isfinite(logit_scale):
        raise checkpoints.CheckpointError(f"the checkpoint's logit_scale is {logit_scale}")
    return repository.ModelFacts(
        embedding_dim=model.config.projection_dim,
        image_size=int(size["shortest_edge"] if isinstance(size, dict) else size),
        crop_size=int(crop["height"] if isinstance(crop, dict) else crop),
        context_length=model.config.text_config.max_position_embeddings,
        logit_scale=logit_scale,
        image_mean=tuple(preprocessor.get("image_mean", (0.48145466, 0.4578275, 0.40821073))),
        image_std=tuple(preprocessor.get("image_std", (0.26862954, 0.26130258, 0.27577711))),
        eos_token_id=int(model.config.text_config.eos_token_id),
    )


def _git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return result.stdout.strip()


def build_manifest(
    ckpt: checkpoints.Checkpoint, facts: repository.ModelFacts, precision: str, settings: repository.Settings
) -> dict[str, Any]:
    import torch
    import transformers

    return {
        "model_id": ckpt.model_id,
        "revision": ckpt.revision,
        "variant": "demo" if ckpt.is_demo else "full",
        "weights_file": ckpt.weights_file.name,
        "weights_sha256": ckpt.weights_sha256(),
        "precision": precision,
        "device": settings.device,
        "embedding_dim": facts.embedding_dim,
        "image_size": facts.crop_size,
        "context_length": facts.context_length,
        "logit_scale": facts.logit_scale,
        "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "tools": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "clip_serve": _git_commit(),
        },
    }


def export(
    source: str, out_dir: Path, precision: str = "fp32", settings: repository.Settings | None = None
) -> dict[str, Any]:
    """Export `source` to a model repository at `out_dir`; returns the manifest."""
    import torch
    from transformers import CLIPModel

    settings = settings or repository.Settings()
    trace_device = "cuda" if settings.device == "gpu" else "cpu"
    if trace_device == "cuda" and not torch.cuda.is_available():
        raise checkpoints.CheckpointError(
            "--device gpu exports on a GPU: the traced text graph keeps the device "
            "it was traced on, and this machine has no CUDA device"
        )
    ckpt = checkpoints.resolve(source)
    model = CLIPModel.from_pretrained(str(ckpt.folder), dtype="float32")
    facts = model_facts(model, ckpt.preprocessor_config())
    manifest = build_manifest(ckpt, facts, precision, settings)
    image_encoder, text_encoder = encoders.trace(model, precision, trace_device)
    repository.write(
        out_dir,
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        tokenizer_dir=ckpt.folder,
        facts=facts,
        settings=settings,
        manifest=manifest,
    )
    return manifest


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = repository.Settings()
    parser = argparse.ArgumentParser(
        prog="python -m export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Hub id or local checkpoint folder (%(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="repository to write (%(default)s)")
    parser.add_argument("--precision", choices=sorted(encoders.PRECISIONS), default="fp32")
    parser.add_argument("--device", choices=("cpu", "gpu"), default=defaults.device)
    parser.add_argument(
        "--image-instances", type=int, default=None, help="default: measured per precision (repository.IMAGE_LAYOUT)"
    )
    parser.add_argument("--text-instances", type=int, default=defaults.text_instances)
    parser.add_argument(
        "--image-torch-threads",
        type=int,
        default=None,
        help="torch threads per image-encoder instance; default: measured per precision (repository.IMAGE_LAYOUT)",
    )
    parser.add_argument(
        "--text-torch-threads",
        type=int,
        default=defaults.text_torch_threads,
        help="torch threads per text-encoder instance (%(default)s)",
    )
    parser.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size)
    parser.add_argument("--batch-delay-us", type=int, default=defaults.batch_delay_us)
    parser.add_argument("--max-image-pixels", type=int, default=defaults.max_image_pixels)
    parser.add_argument(
        "--label-cache-mb",
        type=int,
        default=defaults.label_cache_bytes >> 20,
        help="per-label text embedding cache per text-encoder instance (%(default)s MB)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = repository.Settings(
        device=args.device,
        image_instances=args.image_instances,
        text_instances=args.text_instances,
        image_torch_threads=args.image_torch_threads,
        text_torch_threads=args.text_torch_threads,
        max_batch_size=args.max_batch_size,
        batch_delay_us=args.batch_delay_us,
        max_image_pixels=args.max_image_pixels,
        label_cache_bytes=args.label_cache_mb << 20,
    )
    try:
        manifest = export(args.model, args.out, args.precision, settings)
    except checkpoints.CheckpointError as error:
        print(f"export: {error}", file=sys.stderr)
        return 2
    print(json.dumps(manifest, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
