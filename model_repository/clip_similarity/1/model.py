"""Triton model: image and text embeddings -> LOGITS = exp(logit_scale) * cosine, PROBS = softmax.

Both inputs are L2-normalised again here, so the step is correct for any embeddings a caller
sends, not only the unit-norm ones our encoders produce. Computed in float32 with numpy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from triton_model_utils import invalid_argument, model_config, parameter


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, np.finfo(np.float32).tiny)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.scale = np.float32(math.exp(float(parameter(model_config(args), "logit_scale"))))

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._one(request) for request in requests]

    def _one(self, request: Any) -> Any:
        images = pb_utils.get_input_tensor_by_name(request, "IMAGE_EMBEDS").as_numpy().astype(np.float32)
        texts = pb_utils.get_input_tensor_by_name(request, "TEXT_EMBEDS").as_numpy().astype(np.float32)
        if images.shape[-1] != texts.shape[-1]:
            return invalid_argument(f"IMAGE_EMBEDS has dimension {images.shape[-1]}, TEXT_EMBEDS {texts.shape[-1]}")
        logits = (self.scale * (l2_normalize(images) @ l2_normalize(texts).T)).astype(np.float32)
        probs = softmax(logits).astype(np.float32)
        return pb_utils.InferenceResponse([pb_utils.Tensor("LOGITS", logits), pb_utils.Tensor("PROBS", probs)])
