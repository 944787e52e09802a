"""Triton model: raw image bytes -> PIXEL_VALUES (see image_preprocessing for the rules)."""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from image_preprocessing import ImageError, PreprocessConfig, preprocess
from triton_model_utils import cancelled, decode_strings, invalid_argument, model_config, parameter


def _floats(text: str) -> tuple[float, float, float]:
    first, second, third = (float(value) for value in text.split(","))
    return first, second, third


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        self.config = PreprocessConfig(
            shortest_edge=int(parameter(config, "image_size")),
            crop_size=int(parameter(config, "crop_size")),
            mean=_floats(parameter(config, "image_mean")),
            std=_floats(parameter(config, "image_std")),
            max_pixels=int(parameter(config, "max_image_pixels")),
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._one(request) for request in requests]

    def _one(self, request: Any) -> Any:
        images = decode_strings(request, "IMAGE")
        if not images:
            return invalid_argument("IMAGE is empty: send at least one image")
        pixels = []
        for index, data in enumerate(images):
            if request.is_cancelled():
                return cancelled()
            try:
                pixels.append(preprocess(data, self.config))
            except ImageError as error:
                return invalid_argument(f"IMAGE[{index}]: {error}")
        return pb_utils.InferenceResponse([pb_utils.Tensor("PIXEL_VALUES", np.stack(pixels))])
