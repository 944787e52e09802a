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

import clip_contract
from clip_contract import artifacts, models
from clip_contract import parameters as keys
from export.checkpoint import TOKENIZER_FILES

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "model_repository"
COMMON_DIR = TEMPLATE_DIR / "common"
CONTRACT_DIR = Path(clip_contract.__file__).parent  # copied into every Python model, as COMMON_DIR's modules are


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
    shortest_edge: int  # the image's shorter side after the resize
    crop_size: int  # the side of the centre crop: the image tower's input
    context_length: int
    logit_scale: float  # the log of the applied scale, read from the weights
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    eos_token_id: int


def read_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _set_parameter(config: model_config_pb2.ModelConfig, key: str, value: object) -> None:
    config.parameters[key].string_value = str(value)


class ContractMismatch(RuntimeError):
    """A template config.pbtxt that disagrees with clip_contract.models: nothing is written."""


# Triton's config datatype names for the contract's.
CONFIG_DATATYPES = {"BYTES": "TYPE_STRING", "FP32": "TYPE_FP32", "INT32": "TYPE_INT32", "INT64": "TYPE_INT64"}


def check_contract(config: model_config_pb2.ModelConfig) -> None:
    """The config's tensors are exactly its model's in the contract, by name, type and optionality."""
    model = models.BY_NAME.get(config.name)
    if model is None:
        raise ContractMismatch(f"model {config.name!r} is not in clip_contract.models")

    def declared(tensors: Any) -> set[tuple[str, str, bool]]:
        kind = model_config_pb2.DataType.Name
        return {(tensor.name, kind(tensor.data_type), bool(getattr(tensor, "optional", False))) for tensor in tensors}

    optional = set(model.optional_inputs)
    wanted_inputs = {(t.name, CONFIG_DATATYPES[t.datatype], t in optional) for t in model.inputs}
    wanted_outputs = {(t.name, CONFIG_DATATYPES[t.datatype], False) for t in model.outputs}
    for what, found, wanted in (
        ("inputs", declared(config.input), wanted_inputs),
        ("outputs", declared(config.output), wanted_outputs),
    ):
        if found != wanted:
            raise ContractMismatch(
                f"{config.name}: config.pbtxt {what} {sorted(found)} differ from the contract's {sorted(wanted)}"
            )


def _resize_tensors(config: model_config_pb2.ModelConfig, facts: ModelFacts) -> None:
    """Tensor names say what they hold, so their shapes follow from the facts by name."""
    for tensor in [*config.input, *config.output]:
        if tensor.name in (models.IMAGE_EMBEDS.name, models.TEXT_EMBEDS.name):
            tensor.dims[-1] = facts.embedding_dim
        elif tensor.name == models.PIXEL_VALUES.name:
            tensor.dims[-2:] = [facts.crop_size, facts.crop_size]


def image_layout(settings: Settings, precision: str) -> tuple[int, int]:
    """Image-encoder (instances, threads): the settings where given, else the measured default."""
    default = GPU_IMAGE_LAYOUT if settings.device == "gpu" else IMAGE_LAYOUT.get(("cpu", precision), (1, 2))
    return settings.image_instances or default[0], settings.image_torch_threads or default[1]


def _configure(
    config: model_config_pb2.ModelConfig, facts: ModelFacts, settings: Settings, manifest: dict[str, Any]
) -> None:
    name = config.name
    _resize_tensors(config, facts)
    if name == models.PREPROCESS_IMAGE.name:
        _set_parameter(config, keys.SHORTEST_EDGE, facts.shortest_edge)
        _set_parameter(config, keys.CROP_SIZE, facts.crop_size)
        _set_parameter(config, keys.IMAGE_MEAN, ",".join(repr(x) for x in facts.image_mean))
        _set_parameter(config, keys.IMAGE_STD, ",".join(repr(x) for x in facts.image_std))
        _set_parameter(config, keys.MAX_IMAGE_PIXELS, settings.max_image_pixels)
        config.instance_group[0].count = settings.preprocess_instances
    elif name == models.TOKENIZE.name:
        _set_parameter(config, keys.CONTEXT_LENGTH, facts.context_length)
        _set_parameter(config, keys.TOKEN_CACHE_BYTES, settings.token_cache_bytes)
    elif name == models.SIMILARITY.name:
        _set_parameter(config, keys.LOGIT_SCALE, repr(facts.logit_scale))
    elif name in (encoder.name for encoder in models.ENCODERS):
        instances, threads = image_layout(settings, str(manifest["precision"]))
        if name == models.TEXT_ENCODER.name:
            instances, threads = settings.text_instances, settings.text_torch_threads
        _set_parameter(config, keys.TORCH_THREADS, threads)
        group = config.instance_group[0]
        group.count = instances
        group.kind = (
            model_config_pb2.ModelInstanceGroup.KIND_GPU
            if settings.device == "gpu"
            else model_config_pb2.ModelInstanceGroup.KIND_CPU
        )
        _set_parameter(config, keys.ARTIFACT, manifest["artifact"])
        _set_parameter(config, keys.EXECUTION, manifest["execution"])
        if manifest.get("compiled_for"):
            _set_parameter(config, keys.COMPILED_FOR, manifest["compiled_for"])
        if name == models.TEXT_ENCODER.name:
            _set_parameter(config, keys.LABEL_CACHE_BYTES, settings.label_cache_bytes)
            _set_parameter(config, keys.ENCODE_BATCH_SIZE, settings.text_batch_size)
            _set_parameter(config, keys.EOS_TOKEN_ID, facts.eos_token_id)
        if name == models.IMAGE_ENCODER.name:
            scheme = manifest.get("int8_scheme")
            if scheme:  # full-range int8 refuses to load where the kernels saturate (int8_kernels.py)
                activations = "reduced-range" if scheme["reduce_range"] else "full-range"
                _set_parameter(config, keys.INT8_ACTIVATIONS, activations)
            config.max_batch_size = settings.max_batch_size
            config.dynamic_batching.max_queue_delay_microseconds = settings.batch_delay_us
    elif models.BY_NAME[name].public:
        # Any Triton client can read which model answers from the ensemble's config.
        for key in keys.MODEL_CARD:
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

    module.save(str(folder / artifacts.TORCHSCRIPT))
    tensors = [*module.named_parameters(), *module.named_buffers()]
    torch.save({name: tensor.detach().contiguous() for name, tensor in tensors}, folder / artifacts.TORCHSCRIPT_WEIGHTS)


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
    templates = {model.name: TEMPLATE_DIR / model.name for model in models.MODELS}
    configs = {name: read_config(folder / "config.pbtxt") for name, folder in templates.items()}
    for config in configs.values():  # all checked before anything is written
        check_contract(config)
    skip = shutil.ignore_patterns("__pycache__", "*.pt", "*.pt2", artifacts.TOKENIZER)
    for name, config in configs.items():
        target = staging / name
        shutil.copytree(templates[name], target, ignore=skip)
        _configure(config, facts, settings, manifest)
        (target / "config.pbtxt").write_text(text_format.MessageToString(config))
        if config.backend == "python":
            for module in COMMON_DIR.glob("*.py"):
                shutil.copy2(module, target / artifacts.VERSION / module.name)
            shutil.copytree(CONTRACT_DIR, target / artifacts.VERSION / CONTRACT_DIR.name, ignore=skip)

    def version(model: models.Model) -> Path:
        return staging / model.name / artifacts.VERSION

    save_encoder(image_encoder, version(models.IMAGE_ENCODER))
    save_encoder(text_encoder, version(models.TEXT_ENCODER))
    for model_name, package in packages.items():  # compiled towers: loaded instead of model.pt
        folder = version(models.BY_NAME[model_name])
        shutil.copy2(package, folder / artifacts.COMPILED)
        weights = artifacts.compiled_weights(package)  # the package's weights, where kept beside it
        if weights.is_file():
            shutil.copy2(weights, artifacts.compiled_weights(folder / artifacts.COMPILED))
    write_tokenizer(tokenizer_dir, version(models.TOKENIZE) / artifacts.TOKENIZER)
    (staging / artifacts.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
