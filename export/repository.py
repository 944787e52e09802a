"""Write a complete, self-contained Triton model repository for one CLIP checkpoint.

The committed `model_repository/` holds each model's template: config.pbtxt, its version folder
and, where its config depends on the checkpoint (embedding size, resize and crop, context length,
logit scale, preprocessing constants) or the deployment settings (instances, threads, device), a
configure.py that fills that slice. This module checks every template against clip_contract,
copies the version folders (plus the shared modules and the contract into each Python model),
writes the configured configs, and adds the build outputs: the towers, the tokenizer files and
manifest.json.
"""

from __future__ import annotations

import importlib
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
from configuration.flags import setting
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
    # int8 as bf16: on the Intel AMX class Classify at c=8 ran 24.2 img/s with 2 x 1 against 19.0
    # with 1 x 2 (torch; PSS 1.49 against 1.08 GiB: int8's prepacked weights are not shared), and
    # the OpenVINO tower 27.2 against 26.8 (bench/results/sweep_intel_amx_2core_int8_*).
    ("cpu", "int8"): (2, 1),
}
GPU_IMAGE_LAYOUT = (1, 2)


COMPILE_CHOICES = ("auto", "aoti", "none")  # --compile: compiled encoders beside model.pt (export/compiled.py)
IMAGE_RUNTIMES = ("auto", "torch", "openvino")  # --image-runtime (export/openvino_export.py)
MiB = 1 << 20


@dataclass(frozen=True)
class Settings:
    """Deployment settings; the defaults suit a 2-core CPU machine. Each is a flag of
    `python -m export` and `python -m serve` (configuration.flags)."""

    device: str = setting("cpu", choices=("cpu", "gpu"), help="where the encoders run")
    # None: IMAGE_LAYOUT's measured choice for the precision and device.
    image_instances: int | None = setting(None, default_text="measured per precision (repository.IMAGE_LAYOUT)")
    image_torch_threads: int | None = setting(
        None,
        help="torch threads per image-encoder instance",
        default_text="measured per precision (repository.IMAGE_LAYOUT)",
    )
    text_instances: int = 1
    # Decoding and resizing run in Python on the CPU, one core per instance: a GPU replica needs
    # several to keep its GPU busy (throughput per instance: docs/kubernetes.md, Capacity).
    preprocess_instances: int = setting(1, help="image decoding instances, one core each")
    # The text encoder only runs on label-cache misses (cold label sets, Embed texts), mostly while
    # the image encoders wait; two threads shorten those waits (docs/benchmarks.md).
    text_torch_threads: int = setting(2, help="torch threads per text-encoder instance")
    max_batch_size: int = setting(32, help="images per image-encoder execution")
    batch_delay_us: int = setting(2000, help="the dynamic batcher's wait for more images")
    max_image_pixels: int = setting(40_000_000, help="decoded pixels per image")
    label_cache_bytes: int = setting(
        64 * MiB, unit=MiB, flag="label_cache_mb", help="per-label text embedding cache per text-encoder instance, MB"
    )
    token_cache_bytes: int = setting(
        32 * MiB, unit=MiB, flag="token_cache_mb", help="per-prompt token id cache per tokenizer instance, MB"
    )
    text_batch_size: int = setting(64, help="texts per text-encoder forward pass; new texts of a request go in chunks")
    compile: str = setting("auto", choices=COMPILE_CHOICES, help="compiled encoders beside model.pt")
    image_runtime: str = setting(
        "auto",
        choices=IMAGE_RUNTIMES,
        help="what runs the compiled image tower: auto measures torch and OpenVINO here and keeps the faster",
    )
    allow_slow_precision: bool = setting(
        False, help="export bf16/fp16 even where this machine runs them slower than fp32"
    )
    calibration_images: str | None = setting(
        None,
        help="int8: a folder of images like the ones you serve; every fourth is held out for the "
        "accuracy gate; labels.txt beside them names labels to rank",
        default_text="export/calibration_images",
    )
    int8_text_tower: bool = setting(
        True,
        help="int8: quantize the text tower too, calibrated on prompts of the calibration labels and gated "
        "on held-out ones (it is served in fp32 where it fails the gate)",
    )


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


def set_parameter(config: model_config_pb2.ModelConfig, key: str, value: object) -> None:
    config.parameters[key].string_value = str(value)


def set_int8_activations(config: model_config_pb2.ModelConfig, scheme: dict[str, Any]) -> None:
    """Which activations an int8 encoder was quantized for (`scheme`: the manifest's int8_scheme):
    a full-range tower refuses to load where the kernels saturate on them (int8_kernels.py)."""
    set_parameter(config, keys.INT8_ACTIVATIONS, "reduced-range" if scheme["reduce_range"] else "full-range")


@dataclass(frozen=True)
class Export:
    """What a model template's `configure` reads: the checkpoint's facts, the deployment settings
    and the manifest (precision, artifact, execution line)."""

    facts: ModelFacts
    settings: Settings
    manifest: dict[str, Any]


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


def configure_encoder(config: model_config_pb2.ModelConfig, export: Export, instances: int, threads: int) -> None:
    """What both towers' configs share: where and how many instances run, with how many threads
    each, and which artifact the exporter chose and why."""
    set_parameter(config, keys.TORCH_THREADS, threads)
    group = config.instance_group[0]
    group.count = instances
    gpu = export.settings.device == "gpu"
    group.kind = model_config_pb2.ModelInstanceGroup.KIND_GPU if gpu else model_config_pb2.ModelInstanceGroup.KIND_CPU
    set_parameter(config, keys.ARTIFACT, export.manifest["artifact"])
    set_parameter(config, keys.EXECUTION, export.manifest["execution"])
    if export.manifest.get("compiled_for"):
        set_parameter(config, keys.COMPILED_FOR, export.manifest["compiled_for"])


def _configure(config: model_config_pb2.ModelConfig, export: Export) -> None:
    """Shapes from the facts by tensor name; then the template's own slice (its configure.py);
    and on every public model the model card, so that any Triton client can read which model
    answers from the ensemble's config."""
    _resize_tensors(config, export.facts)
    if (TEMPLATE_DIR / config.name / "configure.py").is_file():
        importlib.import_module(f"{TEMPLATE_DIR.name}.{config.name}.configure").configure(config, export)
    if models.BY_NAME[config.name].public:
        for key in keys.MODEL_CARD:
            set_parameter(config, key, export.manifest[key])


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
    for name, config in configs.items():  # all checked before anything is written
        if config.name != name:
            raise ContractMismatch(f"{templates[name]}/config.pbtxt names the model {config.name!r}")
        check_contract(config)
    export = Export(facts, settings, manifest)
    skip = shutil.ignore_patterns("__pycache__", "*.pt", "*.pt2", artifacts.TOKENIZER)
    for name, config in configs.items():
        target = staging / name
        target.mkdir()
        shutil.copytree(templates[name] / artifacts.VERSION, target / artifacts.VERSION, ignore=skip)
        _configure(config, export)
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
        if package.name == artifacts.OPENVINO:  # the image tower as OpenVINO IR: the .xml and its .bin
            shutil.copy2(package, folder / artifacts.OPENVINO)
            shutil.copy2(package.with_name(artifacts.OPENVINO_WEIGHTS), folder / artifacts.OPENVINO_WEIGHTS)
            continue
        shutil.copy2(package, folder / artifacts.COMPILED)
        weights = artifacts.compiled_weights(package)  # the package's weights, where kept beside it
        if weights.is_file():
            shutil.copy2(weights, artifacts.compiled_weights(folder / artifacts.COMPILED))
    write_tokenizer(tokenizer_dir, version(models.TOKENIZE) / artifacts.TOKENIZER)
    (staging / artifacts.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
