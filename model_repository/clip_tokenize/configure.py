"""clip_tokenize's settings: the checkpoint's context length and the token cache's size."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clip_contract import parameters as keys
from export.repository import set_parameter

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

    from export.repository import Export


def configure(config: ModelConfig, export: Export) -> None:
    set_parameter(config, keys.CONTEXT_LENGTH, export.facts.context_length)
    set_parameter(config, keys.TOKEN_CACHE_BYTES, export.settings.token_cache_bytes)
