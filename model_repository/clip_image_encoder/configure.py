"""clip_image_encoder's settings: the measured instances x threads for the precision, the dynamic
batcher, for int8 which activations its kernels were quantized for, and where the exporter
measured OpenVINO faster here, that artifact and the precision it computes in."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clip_contract import parameters as keys
from clip_contract import precisions
from export.repository import configure_encoder, image_layout, set_int8_activations, set_parameter

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

    from export.repository import Export


def configure(config: ModelConfig, export: Export) -> None:
    settings = export.settings
    configure_encoder(config, export, *image_layout(settings, str(export.manifest["precision"])))
    scheme = export.manifest.get("int8_scheme")
    if scheme:
        set_int8_activations(config, scheme)
    if export.manifest.get("image_runtime") == "openvino":
        tower_dtype = precisions.lookup(str(export.manifest["precision"])).tower_dtype
        set_parameter(config, keys.ARTIFACT, "openvino")
        set_parameter(config, keys.OPENVINO_PRECISION, keys.OPENVINO_PRECISION_HINTS[tower_dtype])
    config.max_batch_size = settings.max_batch_size
    config.dynamic_batching.max_queue_delay_microseconds = settings.batch_delay_us
