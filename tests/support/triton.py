"""Build checkpoints and model repositories once per test session and run real Triton servers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from export import repository as repo_writer
from export.__main__ import export
from export.random_checkpoint import build
from launcher.server import ServerSettings, TritonServer, free_port

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "build" / "test-cache"  # survives between runs: exports are deterministic per shape


def checkpoint(shape: str) -> Path:
    folder = CACHE / "checkpoints" / shape
    if not (folder / "model.safetensors").is_file():
        build(shape, folder)
    return folder


def exported(shape: str, precision: str = "fp32", **settings: object) -> Path:
    """An exported repository; always re-exported so model code changes are picked up."""
    out = CACHE / "repositories" / f"{shape}-{precision}"
    export(str(checkpoint(shape)), out, precision, repo_writer.Settings(**settings))  # type: ignore[arg-type]
    return out


def start_triton(repository: Path, log_file: Path, grpc_port: int | None = None) -> TritonServer:
    server = TritonServer(
        ServerSettings(
            model_repository=repository,
            grpc_port=grpc_port or free_port(),
            http_port=free_port(),
            metrics_port=free_port(),
            work_dir=ROOT / "build" / "triton",
            log_file=log_file,
            response_cache_bytes=64 << 20,
        )
    )
    server.start(ready_timeout=300)
    return server


def load_model_module(model: str, module: str) -> ModuleType:
    """Import a module that lives in a model's version folder, for unit tests without Triton."""
    path = ROOT / "model_repository" / model / "1" / f"{module}.py"
    spec = importlib.util.spec_from_file_location(module, path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[module] = loaded
    spec.loader.exec_module(loaded)
    return loaded
