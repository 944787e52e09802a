"""Thin helpers to call the Triton ensembles with tritonclient, as any Triton user would."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient


def bytes_input(name: str, items: list[bytes]) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [len(items)], "BYTES")
    tensor.set_data_from_numpy(np.array(items, dtype=np.object_))
    return tensor


def embed_images(client: grpcclient.InferenceServerClient, images: list[bytes]) -> np.ndarray:
    result = client.infer("clip_embed_image", [bytes_input("IMAGE", images)])
    return result.as_numpy("IMAGE_EMBEDS")


def embed_images_with_outcomes(
    client: grpcclient.InferenceServerClient, images: list[bytes]
) -> tuple[np.ndarray, list[int], list[str]]:
    """IMAGE_EMBEDS (usable images only), and each image's error code and message."""
    result = client.infer("clip_embed_image", [bytes_input("IMAGE", images)])
    messages = [item.decode() for item in result.as_numpy("IMAGE_ERROR_MESSAGES")]
    return result.as_numpy("IMAGE_EMBEDS"), result.as_numpy("IMAGE_ERROR_CODES").tolist(), messages


def embed_texts(client: grpcclient.InferenceServerClient, texts: list[str]) -> np.ndarray:
    result = client.infer("clip_embed_text", [bytes_input("TEXT", [t.encode() for t in texts])])
    return result.as_numpy("TEXT_EMBEDS")


def classify(
    client: grpcclient.InferenceServerClient,
    images: list[bytes],
    texts: list[str],
    templates: tuple[str, ...] = ("{}",),
) -> tuple[np.ndarray, np.ndarray]:
    inputs = [
        bytes_input("IMAGE", images),
        bytes_input("TEXT", [t.encode() for t in texts]),
        bytes_input("TEMPLATES", [t.encode() for t in templates]),
    ]
    result = client.infer("clip_classify", inputs)
    return result.as_numpy("LOGITS"), result.as_numpy("PROBS")


def tokenize(client: grpcclient.InferenceServerClient, texts: list[bytes]) -> np.ndarray:
    return client.infer("clip_tokenize", [bytes_input("TEXT", texts)]).as_numpy("INPUT_IDS")
