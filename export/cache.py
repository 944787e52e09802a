"""Random-weight checkpoints and their exports, built once under build/test-cache and reused: what
the tests and the benchmarks run on (exports are deterministic per shape and settings)."""

from __future__ import annotations

from pathlib import Path

from export import repository
from export.pipeline import export
from export.random_checkpoint import build

CACHE = Path(__file__).resolve().parents[1] / "build" / "test-cache"


def checkpoint(shape: str) -> Path:
    """A random-weight checkpoint of `shape` ("tiny" or "vit-b-16"), built on first use."""
    folder = CACHE / "checkpoints" / shape
    if not (folder / "model.safetensors").is_file():
        build(shape, folder)
    return folder


def exported(shape: str, precision: str = "fp32", **settings: object) -> Path:
    """An exported repository of `checkpoint(shape)`; always re-exported, so that changes to the
    model code are picked up."""
    variant = "".join(f"-{key}{value}" for key, value in sorted(settings.items()) if value is not None)
    out = CACHE / "repositories" / f"{shape}-{precision}{variant}"
    export(str(checkpoint(shape)), out, precision, repository.Settings(**settings))  # type: ignore[arg-type]
    return out
