"""Triton model: PIXEL_VALUES[B, 3, H, W] -> unit-norm IMAGE_EMBEDS[B, D] with the exported model.pt."""

from __future__ import annotations

from typing import Any

from encoder_runtime import Encoder


class TritonPythonModel(Encoder):
    input_name = "PIXEL_VALUES"
    output_name = "IMAGE_EMBEDS"

    def initialize(self, args: dict[str, str]) -> None:
        self.load(args)

    def execute(self, requests: list[Any]) -> list[Any]:
        return self.run_batched(requests)
