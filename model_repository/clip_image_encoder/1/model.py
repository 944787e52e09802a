"""Triton model: PIXEL_VALUES[B, 3, H, W] -> unit-norm IMAGE_EMBEDS[B, D] with the exported tower
(OpenVINO's model.xml where the exporter measured it faster, else the compiled model.pt2, else
TorchScript model.pt: encoder_runtime)."""

from __future__ import annotations

from typing import Any

from encoder_runtime import Encoder

from clip_contract import models


class TritonPythonModel(Encoder):
    input_name = models.PIXEL_VALUES.name
    output_name = models.IMAGE_EMBEDS.name

    def initialize(self, args: dict[str, str]) -> None:
        self.load(args)

    def execute(self, requests: list[Any]) -> list[Any]:
        return self.run_batched(requests)
