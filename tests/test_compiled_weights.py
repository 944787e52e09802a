"""Compiled encoders keep their weights beside the package (model.constants.pt) and the encoder
models memory-map them: the instances of a tower share one copy in the page cache, and the
package's shared library carries no second copy. int8's image tower keeps its prepacked weights
inside. The export runs in its own process: torchao's int8 passes, once registered by an int8
export earlier in a process, make Inductor prepack fp32 weights too (the exporter then keeps
them inside and says so)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import torch

from clip_contract import artifacts
from tests.support.triton import ROOT, load_model_module

# the torch tower: its weights are what these tests are about, whatever OpenVINO would measure here
FP32_COMPILED = ("--precision", "fp32", "--compile", "aoti", "--image-runtime", "torch")


def test_compiled_towers_map_their_weights_from_beside_the_package(tiny_checkpoint: Path, tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    subprocess.run(
        [sys.executable, "-m", "export", "--model", str(tiny_checkpoint), "--out", str(repository), *FP32_COMPILED],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    loader = load_model_module("common", "compiled_package")
    for tower in ("clip_image_encoder", "clip_text_encoder"):
        folder = repository / tower / "1"
        package, weights = folder / artifacts.COMPILED, artifacts.compiled_weights(folder / artifacts.COMPILED)
        assert weights.name == "model.constants.pt" and weights.stat().st_size > 100_000
        with zipfile.ZipFile(package) as archive:
            assert not [name for name in archive.namelist() if "/data/weights/" in name]
        module = loader.load(package)
        mapped = Path("/proc/self/maps").read_text()
        assert str(weights) in mapped  # the weights are the file's pages, not a copy
        # and the package computes with them what the TorchScript model.pt does
        script = torch.jit.load(str(folder / "model.pt")).eval()
        example = torch.rand(2, 3, 224, 224) if tower == "clip_image_encoder" else torch.randint(1, 90, (2, 8))
        with torch.inference_mode():
            assert torch.allclose(module(example), script(example), atol=1e-5)
