"""The Triton models of a clip-serve repository and the tensors between them.

Tensor names say what they hold (the exporter sizes shapes by name: `*_EMBEDS` by the embedding
width, `PIXEL_VALUES` by the crop side); datatypes are Triton's (`BYTES` is `TYPE_STRING` in a
config.pbtxt). The public models are the ensembles the gateway and any Triton client call: the
service is ready on a server when every one of them is READY there (an ensemble is only READY once
all its steps are), which is what the gateway, the launcher's health check and the Kubernetes
probes all check.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str  # Triton's: BYTES, FP32, INT32, INT64


IMAGE = Tensor("IMAGE", "BYTES")  # one encoded image file per element
TEXT = Tensor("TEXT", "BYTES")  # labels or texts, UTF-8
TEMPLATES = Tensor("TEMPLATES", "BYTES")  # prompt templates, each holding "{}" once
PIXEL_VALUES = Tensor("PIXEL_VALUES", "FP32")  # [N, 3, crop, crop], normalised
INPUT_IDS = Tensor("INPUT_IDS", "INT64")  # [L, T] CLIP BPE ids, padded to the longest
TOKEN_COUNTS = Tensor("TOKEN_COUNTS", "INT32")  # [L] tokens per text, before truncation
IMAGE_EMBEDS = Tensor("IMAGE_EMBEDS", "FP32")  # [N, D], unit norm
TEXT_EMBEDS = Tensor("TEXT_EMBEDS", "FP32")  # [L, D], unit norm
LOGITS = Tensor("LOGITS", "FP32")  # [N, L] exp(logit_scale) x cosine
PROBS = Tensor("PROBS", "FP32")  # [N, L] softmax over the labels
IMAGE_ERROR_CODES = Tensor("IMAGE_ERROR_CODES", "INT32")  # [B] google.rpc code per image, 0 when usable
IMAGE_ERROR_MESSAGES = Tensor("IMAGE_ERROR_MESSAGES", "BYTES")  # [B] why, "" when usable

IMAGE_OUTCOMES = (IMAGE_ERROR_CODES, IMAGE_ERROR_MESSAGES)


@dataclass(frozen=True)
class Model:
    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    optional_inputs: tuple[Tensor, ...] = ()  # inputs a caller may leave out
    public: bool = False  # an ensemble callers use; its readiness is the service's


PREPROCESS_IMAGE = Model("clip_preprocess_image", (IMAGE,), (PIXEL_VALUES, *IMAGE_OUTCOMES))
TOKENIZE = Model("clip_tokenize", (TEXT, TEMPLATES), (INPUT_IDS, TOKEN_COUNTS), optional_inputs=(TEMPLATES,))
IMAGE_ENCODER = Model("clip_image_encoder", (PIXEL_VALUES,), (IMAGE_EMBEDS,))
TEXT_ENCODER = Model("clip_text_encoder", (INPUT_IDS,), (TEXT_EMBEDS,))
SIMILARITY = Model(
    "clip_similarity", (IMAGE_EMBEDS, TEXT_EMBEDS, TEMPLATES), (LOGITS, PROBS), optional_inputs=(TEMPLATES,)
)
CLASSIFY = Model("clip_classify", (IMAGE, TEXT, TEMPLATES), (LOGITS, PROBS, *IMAGE_OUTCOMES), public=True)
EMBED_IMAGE = Model("clip_embed_image", (IMAGE,), (IMAGE_EMBEDS, *IMAGE_OUTCOMES), public=True)
EMBED_TEXT = Model("clip_embed_text", (TEXT,), (TEXT_EMBEDS, TOKEN_COUNTS), public=True)

MODELS = (PREPROCESS_IMAGE, TOKENIZE, IMAGE_ENCODER, TEXT_ENCODER, SIMILARITY, CLASSIFY, EMBED_IMAGE, EMBED_TEXT)
PUBLIC_MODELS = tuple(model for model in MODELS if model.public)
PUBLIC_MODEL_NAMES = tuple(model.name for model in PUBLIC_MODELS)
ENCODERS = (IMAGE_ENCODER, TEXT_ENCODER)  # the towers: exported weights, precision, instances and threads

BY_NAME = {model.name: model for model in MODELS}
