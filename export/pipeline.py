"""A CLIP checkpoint -> a Triton model repository: read its facts, trace both towers, write the
repository and its manifest. `python -m export` is the command line over this."""

from __future__ import annotations

import datetime
import math
import platform
import subprocess
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
        "preprocess_instances": settings.preprocess_instances,
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
    source: str,
    out_dir: Path,
    precision: str = "fp32",
    settings: repository.Settings | None = None,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Export `source` to a model repository at `out_dir`; returns the manifest. `model_name`: the
    id clients see (default: the Hub id, or a local folder's name)."""
    import torch
    from transformers import CLIPModel

    settings = settings or repository.Settings()
    trace_device = "cuda" if settings.device == "gpu" else "cpu"
    if trace_device == "cuda" and not torch.cuda.is_available():
        raise checkpoints.CheckpointError(
            "--device gpu exports on a GPU: the traced text graph keeps the device "
            "it was traced on, and this machine has no CUDA device"
        )
    ckpt = checkpoints.resolve(source, model_name)
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
