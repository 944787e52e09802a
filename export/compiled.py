"""Compiled encoders: an AOTInductor package per tower (model.pt2 beside the TorchScript model.pt),
with a dynamic batch dimension (and a dynamic text length), checked against eager transformers
before it is written.

Why AOTInductor on CPU: both towers run faster than the TorchScript trace and eager transformers
(figures: docs/benchmarks.md, "Why compiled encoders"). Freezing lets Inductor fold and prepack
the weights. It needs a C++ compiler at export time (not at serving time), about 40 s per tower
on 2 cores, and the code it writes is for this machine's instruction set: the encoder models
refuse a package compiled for a higher capability than the serving CPU has (AVX-512 code on an
AVX2 machine) rather than crash.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from clip_contract import artifacts

COMMON_DIR = Path(__file__).resolve().parent.parent / "model_repository" / "common"


def cxx_compiler() -> str | None:
    for name in ("c++", "g++", "clang++"):
        found = shutil.which(name)
        if found:
            return found
    return None


def choose_artifact(requested: str, device: str) -> tuple[str, str]:
    """("aoti" or "torchscript", why) for `--compile requested` on `device`."""
    if requested == "none":
        return "torchscript", "TorchScript: compilation turned off (--compile none)"
    if device == "gpu":
        if requested == "aoti":
            raise ValueError("--compile aoti is for CPU encoders; GPU encoders run TorchScript (not measured compiled)")
        return "torchscript", "TorchScript on the GPU (compiled encoders are measured on CPU only)"
    if cxx_compiler() is None:
        if requested == "aoti":
            raise ValueError("--compile aoti needs a C++ compiler (c++, g++ or clang++) at export time")
        return "torchscript", "TorchScript: no C++ compiler here to build compiled encoders (install g++)"
    return "aoti", "AOTInductor: measured faster than TorchScript on CPU (export/compiled.py)"


def package(
    module: torch.nn.Module, example: torch.Tensor, dynamic: dict[int, Any], path: Path, weights_beside: bool
) -> None:
    """Export `module` with the dims in `dynamic` left free, compile it, write the package to `path`;
    with `weights_beside`, its weights go to their own file next to it, which the encoder models
    memory-map (model_repository/common/compiled_package.py says why). Those weights stay plain
    tensors (no oneDNN prepacking, which makes them opaque): measured at the same speed in fp32."""
    configs: dict[str, Any] = {"freezing": True}
    if weights_beside:
        configs.update(
            {
                "cpp.weight_prepack": False,
                "aot_inductor.package_constants_in_so": False,
                "aot_inductor.package_constants_on_disk_format": "pickle_weights",
            }
        )
    with torch.no_grad():
        program = torch.export.export(module, (example,), dynamic_shapes=[dynamic])
        try:
            with warnings.catch_warnings():
                # Packaging weights one per file warns about weights that share storage: harmless here.
                warnings.filterwarnings("ignore", message="No complete tensor found in the group")
                torch._inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs=configs)
        except Exception as error:
            # Once torchao's int8 passes are registered (an int8 export earlier in this process),
            # Inductor packs fp32 weights into opaque tensors too: keep them inside the package.
            if not weights_beside or "OpaqueTensorImpl" not in str(error):
                raise
            print(f"export: {path.stem} keeps its weights inside the package (prepacked here)", file=sys.stderr)
            configs = {"freezing": True}
            torch._inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs=configs)
            return
    if weights_beside:
        _move_weights_beside(path)


def _move_weights_beside(path: Path) -> None:
    """Rewrite the package without its pickled weights, saved instead as one file of named
    tensors (the names the package asks for) that torch.load can memory-map."""
    with zipfile.ZipFile(path) as archive:
        (config_name,) = [name for name in archive.namelist() if name.endswith("weights_config.json")]
        weights_dir = config_name.split("/data/", 1)[0] + "/data/weights/"
        storages: dict[str, torch.Tensor] = {}
        constants = {}
        for name, (file, shape, stride, offset) in json.loads(archive.read(config_name)).items():
            if file not in storages:
                storages[file] = torch.load(io.BytesIO(archive.read(weights_dir + file)), weights_only=True)
            constants[name] = storages[file].as_strided(shape, stride, offset).clone()
        torch.save(constants, artifacts.compiled_weights(path))
        slimmer = path.with_name(path.name + ".slim")
        with zipfile.ZipFile(slimmer, "w", zipfile.ZIP_STORED) as out:
            for info in archive.infolist():
                if not info.filename.startswith(weights_dir):
                    out.writestr(info, archive.read(info.filename))
    slimmer.replace(path)


def compiled_package() -> Any:
    """The encoder models' own loader (model_repository/common), so the exporter checks exactly
    what will be served."""
    spec = importlib.util.spec_from_file_location("compiled_package", COMMON_DIR / "compiled_package.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(path: Path) -> Any:
    return compiled_package().load(path)


def batch_dim(max_batch: int) -> Any:
    # min 1: a single image or text is the commonest call; torch.export would otherwise
    # specialise a batch of 1 away.
    return torch.export.Dim("batch", min=1, max=max(2, max_batch))


def compile_image(
    encoder: torch.nn.Module, example: torch.Tensor, max_batch: int, path: Path, weights_beside: bool = True
) -> None:
    package(encoder, example, {0: batch_dim(max_batch)}, path, weights_beside)


def length_dim(context: int) -> Any:
    return torch.export.Dim("length", min=2, max=context)


def compile_text(
    encoder: torch.nn.Module,
    example: torch.Tensor,
    max_batch: int,
    context: int,
    path: Path,
    weights_beside: bool = True,
) -> None:
    package(encoder, example, {0: batch_dim(max_batch), 1: length_dim(context)}, path, weights_beside)
