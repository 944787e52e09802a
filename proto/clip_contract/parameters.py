"""The parameters of the models' config.pbtxt, each with one meaning. The exporter writes them;
the Triton models and the gateway read them."""

from __future__ import annotations

# The checkpoint's preprocessing (clip_preprocess_image), in the reference's own terms
# (CLIPImageProcessor): the image's shorter side is resized to SHORTEST_EDGE, then its centre
# CROP_SIZE x CROP_SIZE is what the image tower sees. They differ for many checkpoints (e.g. 256/224).
SHORTEST_EDGE = "shortest_edge"
CROP_SIZE = "crop_size"
IMAGE_MEAN = "image_mean"  # comma-separated, per RGB channel
IMAGE_STD = "image_std"
MAX_IMAGE_PIXELS = "max_image_pixels"  # decoded pixels allowed per image

# clip_tokenize
CONTEXT_LENGTH = "context_length"  # tokens per text, end token included
TOKEN_CACHE_BYTES = "token_cache_bytes"

# clip_similarity
LOGIT_SCALE = "logit_scale"  # the log of the applied scale, read from the weights

# the encoders
TORCH_THREADS = "torch_threads"
ARTIFACT = "artifact"  # "aoti", "torchscript" or (image encoder) "openvino": what the exporter chose
EXECUTION = "execution"  # one line: what runs and why (also on the ensembles)
COMPILED_FOR = "compiled_for"  # torch's CPU capability the package was compiled (or measured) for
OPENVINO_PRECISION = "openvino_precision"  # "f32", "bf16" or "f16": what OpenVINO computes in
# A tower's dtype (clip_contract.precisions tower_dtype) -> OpenVINO's INFERENCE_PRECISION_HINT.
OPENVINO_PRECISION_HINTS = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
INT8_ACTIVATIONS = "int8_activations"  # "full-range" or "reduced-range" (an int8 encoder only)
LABEL_CACHE_BYTES = "label_cache_bytes"  # text encoder
ENCODE_BATCH_SIZE = "encode_batch_size"  # text encoder: texts per forward pass
EOS_TOKEN_ID = "eos_token_id"  # text encoder

# A request parameter (not a config one), sent by the gateway with every inference: microseconds
# the caller has left. Triton forwards an ensemble's request parameters to its steps but not its
# cancellation, so this is how preprocessing learns that a call is over: it stops between images
# and between an image's decode stages once the time has run out, counted from when it got the
# request (so no two clocks need agree; queueing only makes it later, never early).
TIME_LEFT_US = "clip_time_left_us"

# On every public ensemble, so that any Triton client can read which model answers.
MODEL_ID = "model_id"
REVISION = "revision"
VARIANT = "variant"  # "full" or "demo"
PRECISION = "precision"
EMBEDDING_DIM = "embedding_dim"
MODEL_CARD = (MODEL_ID, REVISION, VARIANT, PRECISION, EMBEDDING_DIM, SHORTEST_EDGE, CROP_SIZE, EXECUTION)
