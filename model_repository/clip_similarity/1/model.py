"""Triton model: image and text embeddings -> LOGITS = exp(logit_scale) * cosine, PROBS = softmax.

With the optional TEMPLATES input (T templates), TEXT_EMBEDS holds T prompt embeddings per label,
text-major, and each label's embedding is their CLIP prompt ensemble (normalise, average,
renormalise) before the cosine.

Both inputs are L2-normalised again here, so the step is correct for any embeddings a caller
sends, not only the unit-norm ones our encoders produce. The arithmetic is
clip_contract.similarity's, which the gateway uses for Classify by label set id.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from triton_model_utils import cancelled, invalid_argument, model_config, parameter

from clip_contract import models, parameters
from clip_contract.similarity import prompt_ensemble, scores


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.scale = np.float32(math.exp(float(parameter(model_config(args), parameters.LOGIT_SCALE))))

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._one(request) for request in requests]

    def _one(self, request: Any) -> Any:
        if request.is_cancelled():
            return cancelled()
        images = pb_utils.get_input_tensor_by_name(request, models.IMAGE_EMBEDS.name).as_numpy().astype(np.float32)
        texts = pb_utils.get_input_tensor_by_name(request, models.TEXT_EMBEDS.name).as_numpy().astype(np.float32)
        if images.shape[-1] != texts.shape[-1]:
            return invalid_argument(f"IMAGE_EMBEDS has dimension {images.shape[-1]}, TEXT_EMBEDS {texts.shape[-1]}")
        templates = pb_utils.get_input_tensor_by_name(request, models.TEMPLATES.name)
        per_label = 1 if templates is None else max(1, templates.as_numpy().size)
        if len(texts) % per_label:
            return invalid_argument(f"TEXT_EMBEDS has {len(texts)} rows, not a multiple of {per_label} templates")
        logits, probs = scores(images, prompt_ensemble(texts, per_label), self.scale)
        return pb_utils.InferenceResponse(
            [pb_utils.Tensor(models.LOGITS.name, logits), pb_utils.Tensor(models.PROBS.name, probs)]
        )
