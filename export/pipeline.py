"""A CLIP checkpoint -> a Triton model repository: read its facts, trace both towers, write the
repository and its manifest. `python -m export` is the command line over this."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import math
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from clip_contract import models
from clip_contract import parameters as keys
from clip_contract import precisions as precision_table
from export import checkpoint as checkpoints
from export import compiled, encoders, hardware, openvino_export, quantize, repository, text_tower


def _side(value: Any, key: str, what: str) -> int:
    """One side in pixels from a preprocessor_config entry: an int, or a dict holding `key` alone;
    a crop (key "height") must be square."""
    if isinstance(value, int):
        return value
    if isinstance(value, dict) and key in value:
        square = key != "height" or value.get("width", value["height"]) == value["height"]
        if square and set(value) <= {key, "width"} and (key == "height" or "width" not in value):
            return int(value[key])
    raise checkpoints.CheckpointError(
        f"preprocessor_config.json {what} is {value!r}; clip-serve serves CLIP's shortest-edge resize and square "
        f"centre crop ({{'shortest_edge': N}} and {{'height': M, 'width': M}})"
    )


def model_facts(model: Any, preprocessor: dict[str, Any]) -> repository.ModelFacts:
    vision = model.config.vision_config
    shortest_edge = _side(preprocessor.get("size", vision.image_size), "shortest_edge", "size")
    crop_size = _side(preprocessor.get("crop_size", vision.image_size), "height", "crop_size")
    if crop_size != vision.image_size:  # the position embeddings fix the tower's input side
        raise checkpoints.CheckpointError(
            f"preprocessor_config.json crops {crop_size} pixels, but the vision tower takes {vision.image_size}"
        )
    logit_scale = float(model.logit_scale.detach().float().item())  # the weights', not the config's
    if not math.isfinite(logit_scale):
        raise checkpoints.CheckpointError(f"the checkpoint's logit_scale is {logit_scale}")
    return repository.ModelFacts(
        embedding_dim=model.config.projection_dim,
        shortest_edge=shortest_edge,
        crop_size=crop_size,
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
        keys.MODEL_ID: ckpt.model_id,
        keys.REVISION: ckpt.revision,
        keys.VARIANT: "demo" if ckpt.is_demo else "full",
        "weights_file": ckpt.weights_file.name,
        "weights_sha256": ckpt.weights_sha256(),
        keys.PRECISION: precision,
        "device": settings.device,
        "preprocess_instances": settings.preprocess_instances,
        "settings": dataclasses.asdict(settings),  # as asked: serve re-exports when they change
        keys.EMBEDDING_DIM: facts.embedding_dim,
        keys.SHORTEST_EDGE: facts.shortest_edge,
        keys.CROP_SIZE: facts.crop_size,
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


class ExportRefused(RuntimeError):
    """The export cannot be made as asked (a precision or artifact this machine cannot serve well,
    an int8 tower that failed its accuracy gate); the message says why and what to do instead."""


def _first_line(error: BaseException) -> str:
    """An error's first line (at most 200 characters), for a reason recorded in the manifest."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def _timed(seconds: dict[str, float], step: str, work: Any) -> Any:
    started = time.perf_counter()
    result = work()
    seconds[step] = round(time.perf_counter() - started, 1)
    return result


def _compile_towers(
    model: Any,
    ckpt: checkpoints.Checkpoint,
    choice: hardware.PrecisionChoice,
    settings: repository.Settings,
    folder: Path,
    seconds: dict[str, float],
) -> tuple[dict[str, Path], dict[str, Any] | None, text_tower.TextTower, openvino_export.RuntimeChoice]:
    """AOTInductor packages of both towers in `folder`, each checked against eager transformers;
    for int8 the image tower is quantized (in the scheme chosen for this machine) and must pass the
    accuracy gate first. Then the image tower's runtime: the package, or the same tower as
    OpenVINO IR where that measures faster here and passes the same checks (`paths` then holds
    the IR for the image encoder)."""
    precision = choice.precision
    quantized = precision_table.lookup(precision).quantized
    image_encoder, text_encoder = encoders.eager_towers(model, precision)
    # What OpenVINO would convert: an fp32 graph, computed at the precision's hint (bf16 weights
    # widen exactly); int8 replaces it with its unfolded calibration below.
    openvino_source: Any = None
    if settings.image_runtime != "torch" and not quantized and openvino_export.unavailable() is None:
        openvino_source = encoders.ImageEncoder(copy.deepcopy(model).float(), encoders.tower_dtype("fp32")).eval()
    config: Any = model.config
    size = int(config.vision_config.image_size)
    gate_summary = None
    paths = {models.IMAGE_ENCODER.name: folder / "image.pt2", models.TEXT_ENCODER.name: folder / "text.pt2"}
    scheme = choice.int8_scheme
    calibration: quantize.Calibration | None = None
    if quantized:
        assert scheme is not None  # choose_precision decides the scheme with the precision
        calibration_dir = Path(settings.calibration_images or quantize.DEFAULT_CALIBRATION)
        try:
            calibration = quantize.Calibration.load(calibration_dir, ckpt.folder)
        except (OSError, quantize.QuantizationRejected) as error:
            raise ExportRefused(f"calibration images: {error}") from None
    # The text tower first: torchao's int8 passes, once registered, change how fp32 weights compile.
    text = text_tower.compile_text_tower(
        model,
        precision,
        text_encoder,
        image_encoder,
        calibration if settings.int8_text_tower else None,
        bool(scheme and scheme.reduce_range),
        settings.text_batch_size,
        paths[models.TEXT_ENCODER.name],
        seconds,
    )
    if quantized and not settings.int8_text_tower:
        text = dataclasses.replace(text, reason="fp32 text tower: asked for (--no-int8-text-tower)")
    image_module: Any = image_encoder
    scheme_name = scheme.name if scheme else ""
    if calibration is not None:
        assert scheme is not None
        image_module, openvino_source = _timed(
            seconds,
            "quantize",
            lambda: quantize.quantize_image(
                image_encoder, calibration.pixels, settings.max_batch_size, scheme.reduce_range
            ),
        )
        result = quantize.gate(
            image_encoder, image_module, text_encoder, calibration.held_out_pixels, calibration.label_ids
        )
        gate_summary = {
            "scheme": scheme.name,
            "calibration": str(calibration.folder),
            "calibration_images": calibration.images,
            **result.summary(),
        }
        if not result.passed():
            raise ExportRefused(_rejection(result, calibration.folder, scheme_name))
    _timed(
        seconds,
        "compile_image",
        lambda: compiled.compile_image(
            image_module,
            encoders.example_pixels(2, size),
            settings.max_batch_size,
            paths[models.IMAGE_ENCODER.name],
            weights_beside=not quantized,  # int8's weights are prepacked (opaque) for its kernels
        ),
    )
    image_package = compiled.load(paths[models.IMAGE_ENCODER.name])
    if calibration is not None:  # what is served must pass the gate too, not only its reference graph
        result = quantize.gate(
            image_encoder, image_package, text_encoder, calibration.held_out_pixels, calibration.label_ids
        )
        gate_summary = {**(gate_summary or {}), "compiled": result.summary()}
        if not result.passed():
            raise ExportRefused(_rejection(result, calibration.folder, scheme_name, "compiled package"))
    else:
        encoders.check_towers(model, precision, image_encoder, text_encoder, image_package, None, "compiled")

    def openvino_problem(served: Any) -> str | None:
        """Why the OpenVINO tower may not be served, by the checks the package passed; or None."""
        if calibration is not None:
            result = quantize.gate(
                image_encoder, served, text_encoder, calibration.held_out_pixels, calibration.label_ids
            )
            if not result.passed():
                return _rejection(result, calibration.folder, scheme_name, "OpenVINO model")
            return None
        try:
            encoders.check_towers(model, precision, image_encoder, text_encoder, served, None, "OpenVINO")
        except RuntimeError as error:
            return str(error)
        return None

    runtime, openvino_xml = _timed(
        seconds,
        "image_runtime",
        lambda: _choose_image_runtime(
            openvino_source, paths[models.IMAGE_ENCODER.name], openvino_problem, settings, precision, size, folder
        ),
    )
    if openvino_xml is not None:
        paths[models.IMAGE_ENCODER.name] = openvino_xml
    return paths, gate_summary, text, runtime


def _choose_image_runtime(
    source: Any,
    package_path: Path,
    problem_of: Any,
    settings: repository.Settings,
    precision: str,
    size: int,
    folder: Path,
) -> tuple[openvino_export.RuntimeChoice, Path | None]:
    """(the image tower's runtime, the OpenVINO IR to serve or None): `source` converted, saved,
    read back through the Triton model's loader, checked by `problem_of`, and timed against the
    package at `package_path` in the serving layout (instances x threads)."""
    instances, threads = repository.image_layout(settings, precision)
    layout = f"{instances} instance{'s' if instances > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}"
    if settings.image_runtime == "torch":
        return openvino_export.decide("torch", {}, None, layout), None
    problem, rates, xml = openvino_export.unavailable(), {}, None
    if problem is None:
        hint = keys.OPENVINO_PRECISION_HINTS[precision_table.lookup(precision).tower_dtype]
        runtime = openvino_export.runtime_module()
        try:
            xml = openvino_export.save(
                openvino_export.convert(source, encoders.example_pixels(2, size), settings.max_batch_size), folder
            )
            served = openvino_export.torch_facing(runtime.compile_model(xml, threads, hint))
        except Exception as error:  # the converter or the plugin, not the model: torch serves it
            problem = f"converting it failed here: {_first_line(error)}"
        else:
            try:
                problem = problem_of(served)
            except Exception as error:  # e.g. rows missing from its answer: not a tower to serve
                problem = f"checking it failed here: {_first_line(error)}"
            del served  # the timing loads its own copies, one process per instance
            if problem is None:
                try:
                    rates = openvino_export.compare(
                        {"torch": package_path, "openvino": xml}, size, instances, threads, hint
                    )
                except Exception as error:  # a timing process that died or hung: no measured choice
                    problem = f"timing it failed here: {_first_line(error)}"
    try:
        quantized = precision_table.lookup(precision).quantized
        required = openvino_export.AUTO_SPEEDUP["int8" if quantized else "float"]
        choice = openvino_export.decide(settings.image_runtime, rates, problem, layout, required)
    except ValueError as error:
        raise ExportRefused(str(error)) from None
    return choice, xml if choice.runtime == "openvino" else None


def _rejection(result: quantize.GateResult, folder: Path, scheme: str, what: str = "quantized graph") -> str:
    return (
        f"the int8 image tower ({scheme} scheme, {what}) failed its accuracy gate on {result.held_out} "
        f"held-out images of {folder}: "
        f"mean cosine {result.mean_cosine:.4f} (needs {quantize.MIN_MEAN_COSINE}), worst "
        f"{result.min_cosine:.4f} (needs {quantize.MIN_COSINE}), top-1 agreement with fp32 "
        f"{result.top1_agreement:.0%} (needs {quantize.MIN_AGREEMENT:.0%}). Calibrate on images like the ones "
        f"you serve (--calibration-images DIR), or export fp32."
    )


def export(
    source: str,
    out_dir: Path,
    precision: str = "auto",
    settings: repository.Settings | None = None,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Export `source` to a model repository at `out_dir`; returns the manifest. `precision`: "auto"
    (what this machine runs fastest, export/hardware.py) or a name in clip_contract.precisions.
    `model_name`: the id clients see (default: the Hub id, or a local folder's name)."""
    import tempfile

    import torch
    from transformers import CLIPModel

    settings = settings or repository.Settings()
    try:
        choice = hardware.choose_precision(precision, settings.device, allow_slow=settings.allow_slow_precision)
        artifact, artifact_reason = compiled.choose_artifact(settings.compile, settings.device)
    except ValueError as error:  # PrecisionRefused included
        raise ExportRefused(str(error)) from None
    spec = precision_table.lookup(choice.precision)
    if spec.compiled_only and artifact != "aoti":
        raise ExportRefused(f"{spec.name} runs only as a compiled tower, and {artifact_reason}")
    if settings.image_runtime == "openvino" and artifact != "aoti":
        raise ExportRefused(f"--image-runtime openvino needs the compiled path here, and {artifact_reason}")
    trace_device = "cuda" if settings.device == "gpu" else "cpu"
    if trace_device == "cuda" and not torch.cuda.is_available():
        raise checkpoints.CheckpointError(
            "--device gpu exports on a GPU: the traced text graph keeps the device "
            "it was traced on, and this machine has no CUDA device"
        )
    ckpt = checkpoints.resolve(source, model_name)
    model = CLIPModel.from_pretrained(str(ckpt.folder), dtype="float32")
    facts = model_facts(model, ckpt.preprocessor_config())
    manifest = build_manifest(ckpt, facts, choice.precision, settings)
    seconds: dict[str, float] = {}
    # model.pt is TorchScript in the precision's tower dtype (int8 exists only compiled: its model.pt is fp32).
    image_encoder, text_encoder = _timed(
        seconds, "trace", lambda: encoders.trace(model, choice.precision, trace_device)
    )
    with tempfile.TemporaryDirectory(prefix="clip-export-") as scratch:
        packages: dict[str, Path] = {}
        gate_summary = None
        runtime = openvino_export.RuntimeChoice("torch", f"torch: {artifact_reason}")
        text = text_tower.TextTower(text_tower.float_dtype(choice.precision), "", None)  # TorchScript's
        if artifact == "aoti":
            try:
                packages, gate_summary, text, runtime = _compile_towers(
                    model, ckpt, choice, settings, Path(scratch), seconds
                )
            except ExportRefused:
                raise
            except Exception as error:  # the toolchain, not the model: auto falls back to TorchScript
                if settings.compile != "auto" or spec.compiled_only or settings.image_runtime == "openvino":
                    raise
                artifact, artifact_reason = "torchscript", f"TorchScript: compiling failed here ({_first_line(error)})"
                runtime = openvino_export.RuntimeChoice("torch", f"torch: {artifact_reason}")
                print(f"export: {artifact_reason}", file=sys.stderr)
        manifest.update(
            requested_precision=precision,
            requested_compile=settings.compile,
            precision_reason=choice.reason,
            artifact=artifact,
            artifact_reason=artifact_reason,
            requested_image_runtime=settings.image_runtime,
            image_runtime=runtime.runtime,
            image_runtime_reason=runtime.reason,
            image_runtime_images_per_second={name: round(rate, 2) for name, rate in runtime.rates.items()},
            text_tower=text.dtype,
            text_tower_reason=text.reason,
            **{keys.EXECUTION: execution_line(choice, artifact, settings.device, runtime, text)},
            compiled_for=hardware.torch_capability() if artifact == "aoti" else None,
            machine=hardware.describe(),
            export_seconds=seconds,
        )
        if gate_summary is not None:
            manifest["int8_gate"] = gate_summary
        if text.gate is not None:
            manifest["int8_text_gate"] = text.gate
        if choice.int8_scheme is not None:
            manifest["int8_scheme"] = choice.int8_scheme.summary()
        repository.write(
            out_dir,
            image_encoder=image_encoder,
            text_encoder=text_encoder,
            packages=packages,
            tokenizer_dir=ckpt.folder,
            facts=facts,
            settings=settings,
            manifest=manifest,
        )
    return manifest


def execution_line(
    choice: hardware.PrecisionChoice,
    artifact: str,
    device: str,
    runtime: openvino_export.RuntimeChoice | None = None,
    text: text_tower.TextTower | None = None,
) -> str:
    """One line for GetModelInfo and the logs: what runs, and why."""
    how = "AOTInductor-compiled" if artifact == "aoti" else "TorchScript"
    spec = precision_table.lookup(choice.precision)
    towers = f"{spec.name} encoders"
    if spec.quantized:
        towers = f"{spec.name} image tower, {text.dtype if text else text_tower.float_dtype(spec.name)} text tower"
    line = f"{how} {towers} on {device.upper()}; {choice.reason}"
    if text is not None and text.dtype != "int8" and spec.quantized and text.reason:
        line = f"{line}; {text.reason}"
    if runtime is not None and runtime.runtime == "openvino":
        line = f"{line}; image tower on OpenVINO: {runtime.reason.removeprefix('openvino: ')}"
    return line
