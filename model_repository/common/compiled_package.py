"""Load an AOTInductor package (model.pt2) and its weights.

Where the exporter wrote the weights beside the package (`artifacts.compiled_weights`), they are
memory-mapped and handed to the package as user-managed constants: the instances of a tower then
share one copy in the page cache, and no second copy sits in the package's shared library. A
package that carries its weights inside (int8: its weights are prepacked into oneDNN's opaque
layout, which cannot be saved as tensors) is loaded as it is. What that saves: docs/benchmarks.md
(compiled weights beside the package).

Shared by the encoder models and the exporter (which checks what will be served). Needs only torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from clip_contract import artifacts


def load(package: Path) -> Any:
    module: Any = torch._inductor.aoti_load_package(str(package))
    constants = artifacts.compiled_weights(package)
    if constants.is_file():
        tensors = torch.load(constants, mmap=True, weights_only=True)
        module.load_constants(tensors, check_full_update=True, user_managed=True)
        module.mapped_constants = tensors  # user-managed: the package points into these; keep them alive
    return module
