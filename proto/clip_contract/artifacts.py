"""File names inside an exported model repository: written by the exporter, read by the Triton
models, the launcher and serve."""

from __future__ import annotations

from pathlib import Path

VERSION = "1"  # the one model version folder each model has
MANIFEST = "manifest.json"  # at the repository's top: what was exported, from what, how and why
TORCHSCRIPT = "model.pt"  # each tower as TorchScript (loads anywhere, incl. Triton's libtorch backend)
TORCHSCRIPT_WEIGHTS = "weights.pt"  # the same tensors, plain, for CPU instances to memory-map
COMPILED = "model.pt2"  # each tower as an AOTInductor package, preferred where present
COMPILED_WEIGHTS_SUFFIX = ".constants.pt"  # a package's weights beside it, memory-mapped at load
OPENVINO = "model.xml"  # the image tower as OpenVINO IR, where the exporter measured it faster
OPENVINO_WEIGHTS = "model.bin"  # its weights, beside it (OpenVINO reads them by this name)
TOKENIZER = "tokenizer"  # folder in clip_tokenize's version folder: BPE files and tokenizer.json


def compiled_weights(package: Path) -> Path:
    """Where a package's weights lie beside it (model.pt2 -> model.constants.pt)."""
    return package.with_name(package.stem + COMPILED_WEIGHTS_SUFFIX)
