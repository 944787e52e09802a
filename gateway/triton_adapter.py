"""The gateway's only door to Triton: one shared tritonclient.grpc.aio client.

Each call passes the caller's remaining deadline on as `client_timeout`; when a caller cancels,
the awaiting coroutine is cancelled and with it the gRPC call to Triton, which then cancels the
request inside Triton.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
from tritonclient.utils import InferenceServerException

from gateway import metrics

CLASSIFY, EMBED_IMAGE, EMBED_TEXT = "clip_classify", "clip_embed_image", "clip_embed_text"
REQUIRED_MODELS = (CLASSIFY, EMBED_IMAGE, EMBED_TEXT)


@dataclass(frozen=True)
class ServedModel:
    """What the exporter recorded about the checkpoint, read back from Triton's model configs."""

    model_id: str
    revision: str
    variant: str
    precision: str
    embedding_dim: int
    image_size: int
    context_length: int
    scale: float


def _strings(name: str, items: Sequence[bytes | str]) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [len(items)], "BYTES")
    tensor.set_data_from_numpy(np.array([i.encode() if isinstance(i, str) else i for i in items], dtype=np.object_))
    return tensor


class TritonAdapter:
    def __init__(self, url: str) -> None:
        self.url = url
        self.client = grpcclient_aio.InferenceServerClient(url)

    async def _infer(self, model: str, inputs: list[grpcclient.InferInput], timeout: float | None) -> Any:
        started = time.perf_counter()
        try:
            return await self.client.infer(model, inputs, client_timeout=timeout)
        except InferenceServerException as error:
            metrics.TRITON_ERRORS.labels(model, str(error.status()).removeprefix("StatusCode.")).inc()
            raise
        finally:
            metrics.TRITON_LATENCY.labels(model).observe(time.perf_counter() - started)

    async def classify(
        self, images: Sequence[bytes], labels: Sequence[str], templates: Sequence[str], timeout: float | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """LOGITS and PROBS [images, labels]; templates are averaged per label inside Triton."""
        inputs = [_strings("IMAGE", images), _strings("TEXT", labels), _strings("TEMPLATES", templates)]
        result = await self._infer(CLASSIFY, inputs, timeout)
        return result.as_numpy("LOGITS"), result.as_numpy("PROBS")

    async def embed_images(self, images: Sequence[bytes], timeout: float | None) -> np.ndarray:
        result = await self._infer(EMBED_IMAGE, [_strings("IMAGE", images)], timeout)
        return result.as_numpy("IMAGE_EMBEDS")

    async def embed_texts(self, texts: Sequence[str], timeout: float | None) -> tuple[np.ndarray, np.ndarray]:
        """TEXT_EMBEDS [texts, dim] and TOKEN_COUNTS [texts]."""
        result = await self._infer(EMBED_TEXT, [_strings("TEXT", texts)], timeout)
        return result.as_numpy("TEXT_EMBEDS"), result.as_numpy("TOKEN_COUNTS")

    async def models_ready(self, names: Sequence[str] = REQUIRED_MODELS, timeout: float = 2.0) -> bool:
        """True when every model is READY. Triton's own liveness stays green when a Python stub
        dies, so the gateway's health follows model readiness instead."""
        try:
            async with asyncio.timeout(timeout):
                checks = await asyncio.gather(*(self.client.is_model_ready(name) for name in names))
        except (InferenceServerException, TimeoutError, OSError):
            return False
        return all(checks)

    async def served_model(self) -> ServedModel:
        classify = (await self.client.get_model_config(CLASSIFY, as_json=True))["config"]
        similarity = (await self.client.get_model_config("clip_similarity", as_json=True))["config"]
        tokenize = (await self.client.get_model_config("clip_tokenize", as_json=True))["config"]

        def parameter(config: dict, key: str) -> str:  # type: ignore[type-arg]
            return str(config.get("parameters", {}).get(key, {}).get("string_value", ""))

        return ServedModel(
            model_id=parameter(classify, "model_id"),
            revision=parameter(classify, "revision"),
            variant=parameter(classify, "variant"),
            precision=parameter(classify, "precision"),
            embedding_dim=int(parameter(classify, "embedding_dim") or 0),
            image_size=int(parameter(classify, "image_size") or 0),
            context_length=int(parameter(tokenize, "context_length") or 0),
            scale=math.exp(float(parameter(similarity, "logit_scale") or 0.0)),
        )

    async def close(self) -> None:
        await self.client.close()
