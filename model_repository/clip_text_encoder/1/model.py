"""Triton model: INPUT_IDS[L, T] -> unit-norm TEXT_EMBEDS[L, D] with the exported tower
(the compiled model.pt2 where present, else TorchScript model.pt: encoder_runtime).

Only the texts missing from the per-label cache (label_cache.py) run through the encoder; hits,
misses and size are exported as Triton custom metrics (clip_label_cache_*), next to Triton's own
metrics on its metrics port.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from encoder_runtime import Encoder
from label_cache import LabelCache, pad, row_key
from triton_model_utils import call_over, cancelled, model_config, parameter

from clip_contract import models, parameters


class TritonPythonModel(Encoder):
    input_name = models.INPUT_IDS.name
    output_name = models.TEXT_EMBEDS.name

    def initialize(self, args: dict[str, str]) -> None:
        self.load(args)
        config = model_config(args)
        self.eos_token_id = int(parameter(config, parameters.EOS_TOKEN_ID))
        self.chunk = max(1, int(parameter(config, parameters.ENCODE_BATCH_SIZE)))
        self.cache = LabelCache(int(parameter(config, parameters.LABEL_CACHE_BYTES)))
        labels = {"model": args["model_name"], "model_instance": args["model_instance_name"]}
        # The families must outlive their metrics, so both are kept on the model.
        self.metric_families = [
            pb_utils.MetricFamily(
                name="clip_label_cache_hits_total",
                description="Texts answered from the per-label cache",
                kind=pb_utils.MetricFamily.COUNTER,
            ),
            pb_utils.MetricFamily(
                name="clip_label_cache_misses_total",
                description="Texts run through the text encoder",
                kind=pb_utils.MetricFamily.COUNTER,
            ),
            pb_utils.MetricFamily(
                name="clip_label_cache_entries",
                description="Texts held in the per-label cache",
                kind=pb_utils.MetricFamily.GAUGE,
            ),
            pb_utils.MetricFamily(
                name="clip_label_cache_bytes",
                description="Memory the per-label cache's entries take (capped by label_cache_bytes)",
                kind=pb_utils.MetricFamily.GAUGE,
            ),
        ]
        self.hits, self.misses, self.size, self.bytes = (
            family.Metric(labels=labels) for family in self.metric_families
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._one(request) for request in requests]

    def _one(self, request: Any) -> Any:
        over = call_over(request)
        if over():
            return cancelled()
        ids = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
        keys = [row_key(row, self.eos_token_id) for row in ids]
        found, missing = self.cache.lookup(keys)
        self.hits.increment(len(keys) - len(missing))
        # Bounded work per forward pass: memory stays flat however many new texts a request brings,
        # each chunk is padded only to its own longest text, and a call that is over stops early
        # (what it computed stays cached).
        for start in range(0, len(missing), self.chunk):
            if over():
                return cancelled()
            chunk = missing[start : start + self.chunk]
            computed = self._encode(pad(chunk, self.eos_token_id))
            self.cache.store(chunk, computed)
            found.update(zip(chunk, computed, strict=True))
            self.misses.increment(len(chunk))
        self.size.set(len(self.cache))
        self.bytes.set(self.cache.entries.bytes)
        embeds = np.stack([found[key] for key in keys]).astype(np.float32)
        return pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, embeds)])
