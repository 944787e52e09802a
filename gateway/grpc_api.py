"""clip.v1.ClipService over gRPC: protobuf messages in and out of `core.ClipCore`, nothing more.

Each method turns its request into a `calls` value and the caller's deadline into a `Deadline`,
calls the core, and writes the result as clip.v1's response. Every failure leaves through
errors.to_status: one mapping, no tracebacks to clients.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import grpc
import grpc.aio
import numpy as np
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from clip_api import clip_service_pb2 as pb
from clip_api import clip_service_pb2_grpc
from clip_contract import encodings, precisions
from gateway import grpc_streams
from gateway.byte_budget import InFlightBytes
from gateway.calls import ClassifyCall, EmbedCall, Field, ImageInput, ItemError, SimilarityCall
from gateway.core import ClipCore, Deadline
from gateway.errors import invalid, to_status

Response = TypeVar("Response")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Response]]
StreamHandler = Callable[[Any, Any, grpc.aio.ServicerContext], AsyncIterator[Response]]

VARIANTS = {"full": pb.MODEL_VARIANT_FULL, "demo": pb.MODEL_VARIANT_DEMO}
OK = status_pb2.Status(code=code_pb2.OK)


def rpc(handler: Handler[Response]) -> Handler[Response]:
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


def stream_rpc(handler: StreamHandler[Response]) -> StreamHandler[Response]:
    """As `rpc`, for a stream: a failure of the whole stream ends it with its status."""

    @functools.wraps(handler)
    async def wrapped(self: Any, requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Response]:
        try:
            async for response in handler(self, requests, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await context.abort_with_status(rpc_status.to_status(to_status(error)))
            raise  # unreachable: abort_with_status raises

    return wrapped


def wire_precision(name: str) -> pb.Precision:
    """clip.v1's Precision value for a precision name the exporter recorded (UNSPECIFIED if unknown)."""
    spec = precisions.PRECISIONS.get(name)
    return cast(pb.Precision, pb.Precision.Value(spec.wire_name)) if spec else pb.PRECISION_UNSPECIFIED


def encoding_of(value: int) -> encodings.Encoding:
    if value == pb.EMBEDDING_ENCODING_UNSPECIFIED:
        return encodings.FLOAT32
    found = encodings.BY_PROTO_VALUE.get(value)
    if found is None:
        names = ", ".join(pb.EmbeddingEncoding.Name(e.proto_value) for e in encodings.ENCODINGS)
        raise invalid(Field("encoding"), f"unknown embedding encoding {value}: one of {names}")
    return found


def encoded(vectors: Sequence[Any], encoding: encodings.Encoding) -> list[pb.Embedding]:
    """OK embeddings of `vectors` in `encoding`: float32 as `vector`, the others as `data`."""
    if encoding is encodings.FLOAT32:
        return [pb.Embedding(status=OK, vector=vector.tolist()) for vector in vectors]
    if not vectors:
        return []
    data, scales = encodings.encode(np.stack(vectors), encoding)
    scale_of = encoding is encodings.INT8
    return [
        pb.Embedding(status=OK, data=row, scale=float(scale) if scale_of else 0.0)
        for row, scale in zip(data, scales, strict=True)
    ]


def images_of(images: Sequence[pb.Image]) -> list[ImageInput]:
    return [
        ImageInput(url=image.url) if image.WhichOneof("source") == "url" else ImageInput(data=image.data)
        for image in images
    ]


def status_of(error: ItemError) -> status_pb2.Status:
    return status_pb2.Status(code=error.code, message=error.message)


class ClipServicer(clip_service_pb2_grpc.ClipServiceServicer):
    def __init__(self, core: ClipCore, in_flight: InFlightBytes | None = None) -> None:
        self.core = core
        self.in_flight = in_flight  # what a stream's requests are held in while worked on

    def _deadline(self, context: grpc.aio.ServicerContext) -> Deadline:
        """The caller's deadline, or the configured default where it set none."""
        remaining = context.time_remaining()
        return Deadline(self.core.config.default_timeout if remaining is None else remaining)

    def _item_deadline(self, context: grpc.aio.ServicerContext) -> Deadline:
        """A stream request's: the configured default, or less where the stream ends sooner."""
        remaining = context.time_remaining()
        default = self.core.config.default_timeout
        return Deadline(default if remaining is None else min(default, remaining))

    @rpc
    async def Classify(self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        return await self._classify(request, self._deadline(context))

    @stream_rpc
    async def ClassifyStream(
        self, requests: AsyncIterator[pb.ClassifyStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ClassifyStreamResponse]:
        async for message in self._stream(
            requests, context, "ClassifyStream", self._classify, pb.ClassifyStreamResponse
        ):
            yield message

    @stream_rpc
    async def EmbedStream(
        self, requests: AsyncIterator[pb.EmbedStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.EmbedStreamResponse]:
        async for message in self._stream(requests, context, "EmbedStream", self._embed, pb.EmbedStreamResponse):
            yield message

    def _stream(
        self,
        requests: AsyncIterator[Any],
        context: grpc.aio.ServicerContext,
        method: str,
        unary: Callable[[Any, Deadline], Awaitable[Any]],
        answer_type: Callable[..., Any],
    ) -> AsyncIterator[Any]:
        """A stream's answers: each request worked on by `unary` under its own deadline, answered
        as an `answer_type` (id, status, response)."""

        async def work(request: Any) -> Any:
            return await unary(request, self._item_deadline(context))

        def answer(item_id: str, status: status_pb2.Status, response: Any) -> Any:
            return answer_type(id=item_id, status=status, response=response)

        window = self.core.config.stream_window
        return grpc_streams.answers(requests, method, work, answer, window, self.in_flight)

    async def _classify(self, request: pb.ClassifyRequest, deadline: Deadline) -> pb.ClassifyResponse:
        labels, templates = list(request.labels), list(request.prompt_templates)
        if request.label_set_id:
            if labels or templates:
                raise invalid(Field("label_set_id"), "send a label set id or labels and templates, not both")
            label_set = self.core.label_set(request.label_set_id)
            labels, templates = list(label_set.labels), list(label_set.templates)
        call = ClassifyCall(images_of(request.images), labels, templates, request.top_k, request.label_set_id)
        result = await self.core.classify(call, deadline)
        response = pb.ClassifyResponse(model_id=result.model_id)
        for item in result.results:
            if isinstance(item, ItemError):
                response.results.append(pb.ImageClassification(status=status_of(item)))
            else:
                labels = [
                    pb.LabelScore(label=s.label, index=s.index, probability=s.probability, score=s.score) for s in item
                ]
                response.results.append(pb.ImageClassification(status=OK, labels=labels))
        return response

    @rpc
    async def RegisterLabelSet(
        self, request: pb.RegisterLabelSetRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterLabelSetResponse:
        label_set_id, count = await self.core.register_label_set(list(request.labels), list(request.prompt_templates))
        return pb.RegisterLabelSetResponse(label_set_id=label_set_id, label_count=count)

    @rpc
    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:
        return await self._embed(request, self._deadline(context))

    async def _embed(self, request: pb.EmbedRequest, deadline: Deadline) -> pb.EmbedResponse:
        encoding = encoding_of(request.encoding)  # refused before any work when unknown
        call = EmbedCall(images_of(request.images), list(request.texts))
        result = await self.core.embed(call, deadline)
        response = pb.EmbedResponse(
            model_id=result.model_id,
            dimension=result.dimension,
            encoding=encoding.proto_value,  # type: ignore[arg-type]
        )
        texts = encoded([text.vector for text in result.texts], encoding)
        for text, embedding in zip(result.texts, texts, strict=True):
            embedding.token_count = text.token_count
        response.text_embeddings.extend(texts)
        usable = iter(encoded([image for image in result.images if not isinstance(image, ItemError)], encoding))
        response.image_embeddings.extend(
            pb.Embedding(status=status_of(image)) if isinstance(image, ItemError) else next(usable)
            for image in result.images
        )
        return response

    @rpc
    async def Similarity(
        self, request: pb.SimilarityRequest, context: grpc.aio.ServicerContext
    ) -> pb.SimilarityResponse:
        call = SimilarityCall(images_of(request.images), list(request.texts))
        result = await self.core.similarity(call, self._deadline(context))
        rows = [
            pb.SimilarityRow(status=status_of(row))
            if isinstance(row, ItemError)
            else pb.SimilarityRow(status=OK, scores=row.tolist())
            for row in result.rows
        ]
        return pb.SimilarityResponse(rows=rows, scale=result.scale, model_id=result.model_id)

    @rpc
    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelInfoResponse:
        model, limits = await self.core.model()
        return pb.GetModelInfoResponse(
            model_id=model.model_id,
            revision=model.revision,
            variant=VARIANTS.get(model.variant, pb.MODEL_VARIANT_UNSPECIFIED),
            precision=wire_precision(model.precision),
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
                image_urls=self.core.fetches_urls,
                max_request_pixels=limits.max_request_pixels,
                stream_window=self.core.config.stream_window,
            ),
        )
