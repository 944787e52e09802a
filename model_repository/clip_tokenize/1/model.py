"""Triton model: UTF-8 texts -> CLIP BPE INPUT_IDS[L, T].

Runs the `tokenizers` pipeline that transformers' CLIPTokenizer builds from the checkpoint, saved
by the exporter as tokenizer/tokenizer.json, so token ids are the reference's by construction
without importing transformers or torch in this stub. Padding is to the longest text of the
request with the end token (the released tokenizer's pad token); the text tower pools at the
first end token and attends causally, so padding never changes an embedding. Texts longer than
the context are truncated to it, keeping the start and end tokens. Token ids are cached per
prompt (token_cache.py), so a label set sent again is not tokenized again.

With the optional TEMPLATES input every text becomes one prompt per template (text-major), the
label substituted for "{}" by plain replacement: str.format would choke on other braces and
would let a template reach attributes of its argument.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from token_cache import TokenCache
from token_rows import pad_rows
from tokenizers import Tokenizer
from triton_model_utils import decode_strings, invalid_argument, model_config, parameter

from clip_contract import artifacts, models, parameters
from clip_contract.similarity import prompts

TOKENIZER_DIR = Path(__file__).with_name(artifacts.TOKENIZER)
TEMPLATES = models.TEMPLATES.name


def _has(request: Any, name: str) -> bool:
    return pb_utils.get_input_tensor_by_name(request, name) is not None


def _utf8(items: list[bytes], name: str) -> list[str]:
    texts = []
    for index, data in enumerate(items):
        try:
            texts.append(data.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise ValueError(f"{name}[{index}] is not valid UTF-8: {error}") from None
    return texts


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        self.context_length = int(parameter(config, parameters.CONTEXT_LENGTH))
        self.tokenizer = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))
        # As CLIPTokenizer(padding=True, truncation=True, max_length=context): the end token pads,
        # and truncation keeps room for the start and end tokens the post-processor adds.
        settings = json.loads((TOKENIZER_DIR / "tokenizer_config.json").read_text())
        pad_token = str(settings.get("pad_token") or "<|endoftext|>")
        self.tokenizer.enable_truncation(max_length=self.context_length)
        pad_id = self.tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise pb_utils.TritonModelException(f"the tokenizer has no {pad_token!r} token to pad with")
        self.pad_id: int = pad_id
        self.cache = TokenCache(
            lambda texts: [encoding.ids for encoding in self.tokenizer.encode_batch(texts)],
            int(parameter(config, parameters.TOKEN_CACHE_BYTES, "0")),
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._one(request) for request in requests]

    def _one(self, request: Any) -> Any:
        raw = decode_strings(request, models.TEXT.name)
        if not raw:
            return invalid_argument("TEXT is empty: send at least one text")
        try:
            texts = _utf8(raw, models.TEXT.name)
            templates = _utf8(decode_strings(request, TEMPLATES), TEMPLATES) if _has(request, TEMPLATES) else []
        except ValueError as error:
            return invalid_argument(str(error))
        for index, template in enumerate(templates):
            if template.count("{}") != 1:
                return invalid_argument(f'TEMPLATES[{index}] must contain "{{}}" exactly once: {template!r}')
        if templates:
            texts = prompts(texts, templates)  # the gateway expands a label set's prompts the same way
        rows = self.cache.ids(texts)
        ids = pad_rows(rows, self.pad_id)
        # Tokens per text before padding (start and end included): what an API bills as usage.
        counts = np.array([len(row) for row in rows], dtype=np.int32)
        return pb_utils.InferenceResponse(
            [pb_utils.Tensor(models.INPUT_IDS.name, ids), pb_utils.Tensor(models.TOKEN_COUNTS.name, counts)]
        )
