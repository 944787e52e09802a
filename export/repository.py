"""Write a complete, self-contained Triton model repository for one CLIP checkpoint.

The committed `model_repository/` holds each model's config.pbtxt and model.py; this module
copies them, fills in what depends on the checkpoint (embedding size, image size, context
length, logit scale, preprocessing constants) and the deployment settings (instances, threads,
device), and adds the build outputs: model.pt files, tokenizer files and manifest.json.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from export.checkpoint import TOKENIZER_FILES
from export.compiled import CONSTANTS_SUFFIX

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "model_repository"
COMMON_DIR = TEMPLATE_DIR / "common"
ENCODERS = ("clip_image_encoder", "clip_text_encoder")
ENSEMBLES = ("clip_classify", "clip_embed_image", "clip_embed_text")


# (image-encoder instances, torch threads each) by (device, precision), chosen on 2 cores with
# `python -m bench.sweep` (figures: bench/results/sweep_cpu_2core_*): for fp32 one instance of two
# threads is as fast as two of one and keeps one copy of the activations; for bf16 two
# single-threaded instances overlap batching and IPC with compute. More threads than cores thrash.
IMAGE_LAYOUT = {
    ("cpu", "fp32"): (1, 2),
    ("cpu", "bf16"): (2, 1),
    ("cpu", "fp16"): (2, 1),
    ("cpu", "int8"): (1, 2),  # as fp32: one copy of the compiled tower, both cores
}
GPU_IMAGE_LAYOUT = (1, 2)


@dataclass(frozen=True)
class Settings:
    """Deployment settings; the defaults suit a 2-core CPU machine."""

    device: str = "cpu"  # "cpu" or "gpu": where the encoders run
    # None: IMAGE_LAYOUT's measured choice for the precision and device.
    image_instances: int | None = None
    image_torch_threads: int | None = None  # per image-encoder instance
    text_instances: int = 1
    # Decoding and resizing run in Python on the CPU, one core per instance: a GPU replica needs
    # several to keep its GPU busy (throughput per instance: docs/kubernetes.md, Capacity).
    preprocess_instances: int = 1
    # The text encoder only runs on label-cache misses (cold label sets, Embed texts), mostly while
    # the image encoders wait; two threads shorten those waits (docs/benchmarks.md).
    text_torch_threads: int = 2
    max_batch_size: int = 32  # images per image-encoder execution
    batch_delay_us: int = 2000  # dynamic batcher's wait for more images
    max_image_pixels: int = 40_000_000
    label_cache_bytes: int = 64 * 1024 * 1024  # per text-encoder instance
    token_cache_bytes: int = 32 * 1024 * 1024  # per tokenizer instance
    text_batch_size: int = 64  # texts per text-encoder forward pass (a request's misses go in chunks)
    compile: str = "auto"  # "auto", "aoti" or "none": compiled encoders beside model.pt (export/compiled.py)
    allow_slow_precision: bool = False  # export bf16/fp16 even where it runs slower than fp32 here
    calibration_images: str | None = None  # int8: folder of calibration images (default: the shipped set)


@dataclass(frozen=True)
class ModelFacts:
    """What the Python models need to know about the checkpoint at load time."""

    embedding_dim: int
    image_size: int  # shortest side after resize
    crop_size: int
    context_length: int
    logit_scale: float  # the log of the applied scale, read from the weights
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    eos_token_id: int


def read_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _set_parameter(config: model_config_pb2.ModelConfig, key: str, value: object) -> None:
    config.parameters[key].string_value = str(value)


def _resize_tensors(config: model_config_pb2.ModelConfig, facts: ModelFacts) -> None:
    """Tensor names say what they hold, so their shapes follow from the facts by name."""
    for tensor in [*config.input, *config.output]:
        if tensor.name.endswith("_EMBEDS"):
            tensor.dims[-1] = facts.embedding_dim
        elif tensor.name == "PIXEL_VALUES":
            tensor.dims[-2:] = [facts.crop_size, facts.crop_size]


def image_layout(settings: Settings, precision: str) -> tuple[int, int]:
    """Image-encoder (instances, threads): the settings where given, else the measured default."""
    default = GPU_IMAGE_LAYOUT if settings.device == "gpu" else IMAGE_LAYOUT.get(("cpu", precision), (1, 2))
    return settings.image_instances or default[0], settings.image_torch_threads or default[1]


def _configure(
    name: str, config: model_config_pb2.ModelConfig, facts: ModelFacts, settings: Settings, manifest: dict[str, Any]
) -> None:
    _resize_tensors(config, facts)
    if name == "clip_preprocess_image":
        _set_parameter(config, "image_size", facts.image_size)
        _set_parameter(config, "crop_size", facts.crop_size)
        _set_parameter(config, "image_mean", ",".join(repr(x) for x in facts.image_mean))
        _set_parameter(config, "image_std", ",".join(repr(x) for x in facts.image_std))
        _set_parameter(config, "max_image_pixels", settings.max_image_pixels)
        config.instance_group[0].count = settings.preprocess_instances
    elif name == "clip_tokenize":
        _set_parameter(config, "context_length", facts.context_length)
        _set_parameter(config, "token_cache_bytes", settings.token_cache_bytes)
    elif name == "clip_similarity":
        _set_parameter(config, "logit_scale", repr(facts.logit_scale))
    elif name in ENCODERS:
        instances, threads = image_layout(settings, str(manifest["precision"]))
        if name == "clip_text_encoder":
            instances, threads = settings.text_instances, settings.text_torch_threads
        _set_parameter(config, "torch_threads", threads)
        group = config.instance_group[0]
        group.count = instances
        group.kind = (
            model_config_pb2.ModelInstanceGroup.KIND_GPU
            if settings.device == "gpu"
            else model_config_pb2.ModelInstanceGroup.KIND_CPU
        )
        _set_parameter(config, "artifact", manifest["artifact"])
        _set_parameter(config, "execution", manifest["execution"])
        if manifest.get("compiled_for"):
            _set_parameter(config, "compiled_for", manifest["compiled_for"])
        if name == "clip_text_encoder":
            _set_parameter(config, "label_cache_bytes", settings.label_cache_bytes)
            _set_parameter(config, "encode_batch_size", settings.text_batch_size)
            _set_parameter(config, "eos_token_id", facts.eos_token_id)
        if name == "clip_image_encoder":
            scheme = manifest.get("int8_scheme")
            if scheme:  # full-range int8 refuses to load where the kernels saturate (int8_kernels.py)
                _set_parameter(config, "int8_activations", "reduced-range" if scheme["reduce_range"] else "full-range")
            config.max_batch_size = settings.max_batch_size
            config.dynamic_batching.max_queue_delay_microseconds = settings.batch_delay_us
    elif name in ENSEMBLES:
        # Any Triton client can read which model answers from the ensemble's config.
        for key in ("model_id", "revision", "variant", "precision", "embedding_dim", "image_size", "execution"):
            _set_parameter(config, key, manifest[key])


def write_tokenizer(checkpoint: Path, target: Path) -> None:
    """The checkpoint's tokenizer files, plus the exact `tokenizers` pipeline transformers'
    CLIPTokenizer builds from them (tokenizer.json), so the Triton model tokenizes identically
    without importing transformers and torch (~0.4 GB less per tokenizer stub)."""
    from transformers import CLIPTokenizer

    target.mkdir()
    for name in TOKENIZER_FILES:
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, target / name)
    CLIPTokenizer.from_pretrained(str(checkpoint)).backend_tokenizer.save(str(target / "tokenizer.json"))


def save_encoder(module: Any, folder: Path) -> None:
    """model.pt, and its tensors again as weights.pt: CPU instances memory-map those, so several
    instances of a tower share one copy of its weights in the page cache (model.pt alone cannot be
    mapped: torch.jit.load copies every tensor into the process)."""
    import torch

    module.save(str(folder / "model.pt"))
    tensors = [*module.named_parameters(), *module.named_buffers()]
    torch.save({name: tensor.detach().contiguous() for name, tensor in tensors}, folder / "weights.pt")


def write(
    out_dir: Path,
    *,
    image_encoder: Any,
    text_encoder: Any,
    packages: dict[str, Path],
    tokenizer_dir: Path,
    facts: ModelFacts,
    settings: Settings,
    manifest: dict[str, Any],
) -> None:
    """Replace `out_dir` with a fresh repository; written beside it first so a crash leaves no half repo."""
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for template in sorted(TEMPLATE_DIR.iterdir()):
        if not (template / "config.pbtxt").is_file():
            continue
        target = staging / template.name
        shutil.copytree(template, target, ignore=shutil.ignore_patterns("__pycache__", "*.pt", "*.pt2", "tokenizer"))
        config = read_config(template / "config.pbtxt")
        _configure(template.name, config, facts, settings, manifest)
        (target / "config.pbtxt").write_text(text_format.MessageToString(config))
        if config.backend == "python":
            for module in COMMON_DIR.glob("*.py"):
                shutil.copy2(module, target / "1" / module.name)
    save_encoder(image_encoder, staging / "clip_image_encoder" / "1")
    save_encoder(text_encoder, staging / "clip_text_encoder" / "1")
    for model_name, package in packages.items():  # compiled towers: loaded instead of model.pt
        shutil.copy2(package, staging / model_name / "1" / "model.pt2")
        weights = package.with_name(package.stem + CONSTANTS_SUFFIX)  # the package's weights, where kept beside it
        if weights.is_file():
            shutil.copy2(weights, staging / model_name / "1" / ("model" + CONSTANTS_SUFFIX))
    write_tokenizer(tokenizer_dir, staging / "clip_tokenize" / "1" / "tokenizer")
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
