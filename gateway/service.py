"""clip.v1.ClipService: validate, call Triton through the adapter, shape the response.

The model work (decode, tokenize, encode, templates, similarity, softmax) happens in Triton; the
gateway only checks requests, routes them, and ranks the returned rows.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
import grpc.aio
import numpy as np
from grpc_status import rpc_status
from numpy.typing import NDArray

from clip_api import clip_service_pb2 as pb
from clip_api import clip_service_pb2_grpc
from clip_contract import precisions
from gateway import metrics, validation
from gateway.admission import Admission
from gateway.auth import TENANT
from gateway.config import GatewayConfig, Limits
from gateway.errors import OK, invalid, to_status
from gateway.health import HealthWatcher
from gateway.image_results import send_usable_images
from gateway.image_sources import GatheredImages, ImageSources
from gateway.triton_adapter import ServedModel, TritonAdapter

Response = TypeVar("Response")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Response]]

VARIANTS = {"full": pb.MODEL_VARIANT_FULL, "demo": pb.MODEL_VARIANT_DEMO}


def _wire_precision(name: str) -> pb.Precision:
    """clip.v1's Precision value for a precision name the exporter recorded (UNSPECIFIED if unknown)."""
    spec = precisions.PRECISIONS.get(name)
    return cast(pb.Precision, pb.Precision.Value(spec.wire_name)) if spec else pb.PRECISION_UNSPECIFIED


def rpc(handler: Handler[Response]) -> Handler[Response]:
    """Every failure leaves through errors.to_status: one mapping, no tracebacks to clients."""

    @functools.wraps(handler)
    async def wrapped(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Response:
        try:
            return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await context.abort_with_status(rpc_status.to_status(to_status(error)))
            raise  # unreachable: abort_with_status raises

    return wrapped


class Deadline:
    """The caller's deadline (or the configured default), to pass on to Triton."""

    def __init__(self, seconds: float) -> None:
        self.expires = time.monotonic() + seconds

    @classmethod
    def of(cls, context: grpc.aio.ServicerContext, default: float) -> Deadline:
        remaining = context.time_remaining()
        return cls(default if remaining is None else remaining)

    def remaining(self) -> float:
        return max(0.001, self.expires - time.monotonic())


def ranked(labels: list[str], logits: NDArray[Any], probs: NDArray[Any], top_k: int) -> list[pb.LabelScore]:
    order = np.argsort(-probs, kind="stable")
    if top_k:
        order = order[:top_k]
    return [
        pb.LabelScore(label=labels[i], index=int(i), probability=float(probs[i]), score=float(logits[i])) for i in order
    ]


def record_sizes(method: str, images: int, labels: int) -> None:
    metrics.IMAGES.labels(method).observe(images)
    metrics.LABELS.labels(method).observe(labels)


class ClipService(clip_service_pb2_grpc.ClipServiceServicer):
    """The gRPC methods are thin: each turns its context into a Deadline and calls the method of
    the same name in lower case, which the HTTP API calls too."""

    def __init__(
        self, triton: TritonAdapter, health: HealthWatcher, config: GatewayConfig, images: ImageSources
    ) -> None:
        self.triton = triton
        self.health = health
        self.config = config
        self.images = images
        self.admission = Admission(config)

    async def _model(self) -> tuple[ServedModel, Limits]:
        """The model that answers and the limits in force (the repository's filled in)."""
        return await self.health.served_model(), self.health.limits()

    def _deadline(self, context: grpc.aio.ServicerContext) -> Deadline:
        return Deadline.of(context, self.config.default_timeout)

    @rpc
    async def Classify(self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        return await self.classify(request, self._deadline(context))

    @rpc
    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:
        return await self.embed(request, self._deadline(context))

    @rpc
    async def Similarity(
        self, request: pb.SimilarityRequest, context: grpc.aio.ServicerContext
    ) -> pb.SimilarityResponse:
        return await self.similarity(request, self._deadline(context))

    @rpc
    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelInfoResponse:
        return await self.model_info()

    async def classify(self, request: pb.ClassifyRequest, deadline: Deadline) -> pb.ClassifyResponse:
        model, limits = await self._model()
        images = await self.images.check(request.images, limits, required=True)
        labels = validation.check_texts(
            list(request.labels), limits, field="labels", maximum=limits.max_labels, required=True
        )
        templates = validation.check_templates(
            list(request.prompt_templates), len(labels), limits, self.config.default_template
        )
        validation.check_top_k(request.top_k, len(labels))
        self.admission.admit(len(request.images), len(labels) * len(templates))
        async with self.admission.slot():
            images = await self.images.fetch(images, limits, deadline.remaining())
            record_sizes("Classify", len(images.data), len(labels))
            outcome = await send_usable_images(
                images.data,
                lambda batch: self.triton.classify(batch, labels, templates, deadline.remaining()),
                images.failed,
            )
        sent_labels = list(request.labels)
        metrics.IMAGE_ERRORS.labels("Classify").inc(len(outcome.errors))
        results = outcome.items(
            len(images.data),
            lambda value, row: pb.ImageClassification(
                status=OK, labels=ranked(sent_labels, value[0][row], value[1][row], request.top_k)
            ),
            lambda status: pb.ImageClassification(status=status),
        )
        return pb.ClassifyResponse(results=results, model_id=model.model_id)

    async def embed(self, request: pb.EmbedRequest, deadline: Deadline) -> pb.EmbedResponse:
        model, limits = await self._model()
        images = await self.images.check(request.images, limits, required=False)
        texts = validation.check_texts(
            list(request.texts), limits, field="texts", maximum=limits.max_texts, required=False
        )
        if not request.images and not texts:
            raise invalid("images", "send at least one image or one text")
        self.admission.admit(len(request.images), len(texts))
        async with self.admission.slot():
            return await self._embed(images, texts, model, limits, deadline)

    async def _embed(
        self, images: GatheredImages, texts: list[str], model: ServedModel, limits: Limits, deadline: Deadline
    ) -> pb.EmbedResponse:
        images = await self.images.fetch(images, limits, deadline.remaining())
        record_sizes("Embed", len(images.data), len(texts))
        response = pb.EmbedResponse(model_id=model.model_id, dimension=model.embedding_dim)
        if texts:
            vectors, token_counts = await self.triton.embed_texts(texts, deadline.remaining())
            metrics.TENANT_TEXT_TOKENS.labels(TENANT.get()).inc(int(token_counts.sum()))
            response.text_embeddings.extend(
                pb.Embedding(status=OK, vector=vector.tolist(), token_count=int(count))
                for vector, count in zip(vectors, token_counts, strict=True)
            )
        if images.data:
            outcome = await send_usable_images(
                images.data, lambda batch: self.triton.embed_images(batch, deadline.remaining()), images.failed
            )
            metrics.IMAGE_ERRORS.labels("Embed").inc(len(outcome.errors))
            response.image_embeddings.extend(
                outcome.items(
                    len(images.data),
                    lambda vectors, row: pb.Embedding(status=OK, vector=vectors[row].tolist()),
                    lambda status: pb.Embedding(status=status),
                )
            )
        return response

    async def similarity(self, request: pb.SimilarityRequest, deadline: Deadline) -> pb.SimilarityResponse:
        model, limits = await self._model()
        images = await self.images.check(request.images, limits, required=True)
        texts = validation.check_texts(
            list(request.texts), limits, field="texts", maximum=limits.max_labels, required=True
        )
        self.admission.admit(len(request.images), len(texts))
        async with self.admission.slot():
            images = await self.images.fetch(images, limits, deadline.remaining())
            record_sizes("Similarity", len(images.data), len(texts))
            # Texts verbatim: the identity template, so Triton's prompt ensemble is a no-op.
            outcome = await send_usable_images(
                images.data,
                lambda batch: self.triton.classify(batch, texts, ["{}"], deadline.remaining()),
                images.failed,
            )
        metrics.IMAGE_ERRORS.labels("Similarity").inc(len(outcome.errors))
        rows = outcome.items(
            len(images.data),
            lambda value, row: pb.SimilarityRow(status=OK, scores=value[0][row].tolist()),
            lambda status: pb.SimilarityRow(status=status),
        )
        return pb.SimilarityResponse(rows=rows, scale=model.scale, model_id=model.model_id)

    async def model_info(self) -> pb.GetModelInfoResponse:
        model, limits = await self._model()
        return pb.GetModelInfoResponse(
            model_id=model.model_id,
            revision=model.revision,
            variant=VARIANTS.get(model.variant, pb.MODEL_VARIANT_UNSPECIFIED),
            precision=_wire_precision(model.precision),
            embedding_dimension=model.embedding_dim,
            image_size=model.crop_size,
            shortest_edge=model.shortest_edge,
            crop_size=model.crop_size,
            context_length=model.context_length,
            scale=model.scale,
            execution=model.execution,
            limits=pb.Limits(
                max_images_per_request=limits.max_images,
                max_labels_per_request=limits.max_labels,
                max_texts_per_request=limits.max_texts,
                max_templates_per_request=limits.max_templates,
                max_label_chars=limits.max_label_chars,
                max_image_bytes=limits.max_image_bytes,
                max_image_pixels=limits.max_image_pixels,
                max_request_bytes=limits.max_request_bytes,
                image_urls=self.images.fetcher is not None,
            ),
        )
