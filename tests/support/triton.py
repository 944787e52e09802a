"""Import a Triton model's own modules for unit tests that need no server."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


COMMON = ROOT / "model_repository" / "common"


def load_model_module(model: str, module: str) -> ModuleType:
    """Import a module that lives in a model's version folder ("common" for the shared ones, which
    the exporter copies into every model and which the models import by name)."""
    if str(COMMON) not in sys.path:
        sys.path.insert(0, str(COMMON))  # the pure shared modules (token_rows); not triton_model_utils' Triton
    folder = COMMON if model == "common" else ROOT / "model_repository" / model / "1"
    path = folder / f"{module}.py"
    spec = importlib.util.spec_from_file_location(module, path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[module] = loaded
    spec.loader.exec_module(loaded)
    return loaded
