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

Every flag also reads a CLIP_EXPORT_* environment variable (--max-batch-size:
CLIP_EXPORT_MAX_BATCH_SIZE); a flag wins over the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from configuration import flags
from export import checkpoint as checkpoints
from export.config import ENV_PREFIX, ExportConfig
from export.pipeline import ExportRefused, export


def parse_args(argv: list[str] | None) -> ExportConfig:
    parser = argparse.ArgumentParser(
        prog="python -m export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    return flags.parse(ExportConfig, parser, argv, os.environ, ENV_PREFIX)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    choice = config.choice
    try:
        manifest = export(choice.model, config.out, choice.precision, choice.settings, config.model_name)
    except (checkpoints.CheckpointError, ExportRefused) as error:
        print(f"export: {error}", file=sys.stderr)
        return 2
    print(json.dumps(manifest, indent=2))
    print(f"wrote {config.out}: {manifest['execution']}", file=sys.stderr)
    return 0
