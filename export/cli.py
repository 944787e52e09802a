"""Export a CLIP checkpoint to a Triton model repository.

    python -m export --model openai/clip-vit-base-patch16 --out build/model_repository
    python -m export --model path/to/local/checkpoint --precision int8 --calibration-images DIR

--precision auto (the default) picks what this machine runs fastest: bf16 only where the CPU has
native bf16 and a bf16 matmul measures faster than fp32 here, else fp32 (export/hardware.py).
bf16/fp16 asked for on a CPU where they would be slower are refused unless --allow-slow-precision.
int8 (CPU, opt-in) quantizes the image tower, calibrated on --calibration-images (default: the set
in export/calibration_images/), and refuses a model that fails the accuracy gate
(export/quantize.py). --compile auto (the default) writes AOTInductor packages beside the
TorchScript model.pt on CPU when a C++ compiler is present (export/compiled.py).

The checkpoint is a Hugging Face Hub id (fetched into the HF cache) or a local folder in the
Hub's layout: config.json, model.safetensors or pytorch_model.bin, vocab.json, merges.txt,
tokenizer_config.json, preprocessor_config.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from clip_contract import precisions
from export import checkpoint as checkpoints
from export import compiled, repository
from export.pipeline import DEFAULT_MODEL, DEFAULT_OUT, ExportRefused, export


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = repository.Settings()
    parser = argparse.ArgumentParser(
        prog="python -m export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Hub id or local checkpoint folder (%(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="repository to write (%(default)s)")
    parser.add_argument("--model-name", help="the model id clients see (default: the Hub id, or a local folder's name)")
    parser.add_argument("--precision", choices=(precisions.AUTO, *precisions.NAMES), default=precisions.AUTO)
    parser.add_argument(
        "--allow-slow-precision",
        action="store_true",
        help="export bf16/fp16 even where this machine runs them slower than fp32",
    )
    parser.add_argument(
        "--compile", choices=compiled.COMPILE_CHOICES, default=defaults.compile, help="compiled encoders (%(default)s)"
    )
    parser.add_argument(
        "--calibration-images",
        help="int8: a folder of images like the ones you serve (default: export/calibration_images); "
        "every fourth is held out for the accuracy gate; labels.txt beside them names labels to rank",
    )
    parser.add_argument("--device", choices=("cpu", "gpu"), default=defaults.device)
    parser.add_argument(
        "--image-instances", type=int, default=None, help="default: measured per precision (repository.IMAGE_LAYOUT)"
    )
    parser.add_argument("--text-instances", type=int, default=defaults.text_instances)
    parser.add_argument(
        "--preprocess-instances",
        type=int,
        default=defaults.preprocess_instances,
        help="image decoding instances, one core each, ~120 images/s each (%(default)s)",
    )
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
    parser.add_argument(
        "--text-batch-size",
        type=int,
        default=defaults.text_batch_size,
        help="texts per text-encoder forward pass; new texts of a request go in chunks (%(default)s)",
    )
    parser.add_argument("--batch-delay-us", type=int, default=defaults.batch_delay_us)
    parser.add_argument("--max-image-pixels", type=int, default=defaults.max_image_pixels)
    parser.add_argument(
        "--label-cache-mb",
        type=int,
        default=defaults.label_cache_bytes >> 20,
        help="per-label text embedding cache per text-encoder instance (%(default)s MB)",
    )
    parser.add_argument(
        "--token-cache-mb",
        type=int,
        default=defaults.token_cache_bytes >> 20,
        help="per-prompt token id cache per tokenizer instance (%(default)s MB)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = repository.Settings(
        device=args.device,
        image_instances=args.image_instances,
        text_instances=args.text_instances,
        preprocess_instances=args.preprocess_instances,
        image_torch_threads=args.image_torch_threads,
        text_torch_threads=args.text_torch_threads,
        max_batch_size=args.max_batch_size,
        batch_delay_us=args.batch_delay_us,
        max_image_pixels=args.max_image_pixels,
        label_cache_bytes=args.label_cache_mb << 20,
        token_cache_bytes=args.token_cache_mb << 20,
        text_batch_size=args.text_batch_size,
        compile=args.compile,
        allow_slow_precision=args.allow_slow_precision,
        calibration_images=args.calibration_images,
    )
    try:
        manifest = export(args.model, args.out, args.precision, settings, args.model_name)
    except (checkpoints.CheckpointError, ExportRefused) as error:
        print(f"export: {error}", file=sys.stderr)
        return 2
    print(json.dumps(manifest, indent=2))
    print(f"wrote {args.out}: {manifest['execution']}", file=sys.stderr)
    return 0
