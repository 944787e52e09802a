"""clip_similarity's settings: the logit scale, as the weights hold it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clip_contract import parameters as keys
from export.repository import set_parameter

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

    from export.repository import Export


def configure(config: ModelConfig, export: Export) -> None:
    set_parameter(config, keys.LOGIT_SCALE, repr(export.facts.logit_scale))
