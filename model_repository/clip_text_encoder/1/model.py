"""Triton model: INPUT_IDS[L, T] -> unit-norm TEXT_EMBEDS[L, D] with the exported model.pt."""

from __future__ import annotations

from typing import Any

from torchscript_encoder import TorchScriptEncoder


class TritonPythonModel(TorchScriptEncoder):
    input_name = "INPUT_IDS"
    output_name = "TEXT_EMBEDS"

    def initialize(self, args: dict[str, str]) -> None:
        self.load(args)

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self.run_one(request) for request in requests]
