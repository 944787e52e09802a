"""clip_text_encoder's settings: instances and threads, the label cache, the texts per forward
pass, the checkpoint's end token (where the cache keys end), and for an int8 tower which
activations its kernels were quantized for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clip_contract import parameters as keys
from export.repository import configure_encoder, set_int8_activations, set_parameter

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

    from export.repository import Export


def configure(config: ModelConfig, export: Export) -> None:
    settings = export.settings
    configure_encoder(config, export, settings.text_instances, settings.text_torch_threads)
    set_parameter(config, keys.LABEL_CACHE_BYTES, settings.label_cache_bytes)
    set_parameter(config, keys.ENCODE_BATCH_SIZE, settings.text_batch_size)
    set_parameter(config, keys.EOS_TOKEN_ID, export.facts.eos_token_id)
    scheme = export.manifest.get("int8_scheme")
    if scheme and export.manifest.get("text_tower") == "int8":
        set_int8_activations(config, scheme)
