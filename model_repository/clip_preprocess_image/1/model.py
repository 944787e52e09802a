"""Triton model: raw image bytes -> PIXEL_VALUES of the usable ones, and a status per image.

One bad image never fails the request: PIXEL_VALUES holds one row per image whose
IMAGE_ERROR_CODES entry is 0 (in request order), and IMAGE_ERROR_CODES / IMAGE_ERROR_MESSAGES say
for every image what was wrong (a google.rpc code and a message; 0 and "" when fine). When no image
is usable, PIXEL_VALUES holds one row of zeros, because the image encoder cannot take an empty
batch; its results are to be ignored. See image_preprocessing for the rules.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from image_preprocessing import ImageError, PreprocessConfig, preprocess
from triton_model_utils import call_over, cancelled, decode_strings, invalid_argument, model_config, parameter

from clip_contract import models, parameters


def _floats(text: str) -> tuple[float, float, float]:
    first, second, third = (float(value) for value in text.split(","))
    return first, second, third


class CallOver(Exception):
    """The call an image is being prepared for has been cancelled or is out of time."""


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        self.config = PreprocessConfig(
            shortest_edge=int(parameter(config, parameters.SHORTEST_EDGE)),
            crop_size=int(parameter(config, parameters.CROP_SIZE)),
            mean=_floats(parameter(config, parameters.IMAGE_MEAN)),
            std=_floats(parameter(config, parameters.IMAGE_STD)),
            max_pixels=int(parameter(config, parameters.MAX_IMAGE_PIXELS)),
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._one(request) for request in requests]

    def _one(self, request: Any) -> Any:
        over = call_over(request)
        images = decode_strings(request, models.IMAGE.name)
        if not images:
            return invalid_argument("IMAGE is empty: send at least one image")

        def check() -> None:
            if over():
                raise CallOver

        pixels, codes, messages = [], [], []
        try:
            for data in images:
                check()
                try:
                    pixels.append(preprocess(data, self.config, check))
                    codes.append(0)
                    messages.append(b"")
                except ImageError as error:
                    codes.append(error.code)
                    messages.append(str(error).encode())
        except CallOver:  # checked between images and between an image's decode stages
            return cancelled()
        if not pixels:  # a placeholder row: the encoder takes no empty batch
            size = self.config.crop_size
            pixels.append(np.zeros((3, size, size), dtype=np.float32))
        return pb_utils.InferenceResponse(
            [
                pb_utils.Tensor(models.PIXEL_VALUES.name, np.stack(pixels)),
                pb_utils.Tensor(models.IMAGE_ERROR_CODES.name, np.array(codes, dtype=np.int32)),
                pb_utils.Tensor(models.IMAGE_ERROR_MESSAGES.name, np.array(messages, dtype=np.object_)),
            ]
        )
