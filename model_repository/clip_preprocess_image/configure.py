"""clip_preprocess_image's settings: the checkpoint's resize, crop and normalisation, the pixel
limit, and how many decoding instances run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clip_contract import parameters as keys
from export.repository import set_parameter

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

    from export.repository import Export


def configure(config: ModelConfig, export: Export) -> None:
    facts, settings = export.facts, export.settings
    set_parameter(config, keys.SHORTEST_EDGE, facts.shortest_edge)
    set_parameter(config, keys.CROP_SIZE, facts.crop_size)
    set_parameter(config, keys.IMAGE_MEAN, ",".join(repr(x) for x in facts.image_mean))
    set_parameter(config, keys.IMAGE_STD, ",".join(repr(x) for x in facts.image_std))
    set_parameter(config, keys.MAX_IMAGE_PIXELS, settings.max_image_pixels)
    config.instance_group[0].count = settings.preprocess_instances
