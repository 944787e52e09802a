"""What the sync and async clients share: configuration, channel options, request building,
response parsing and the retry schedule. Only the act of calling differs between them."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from numpy.typing import NDArray

from clip_api import clip_service_pb2 as pb
from clip_client.bulk import Chunk, Ledger
from clip_client.config import ClientConfig, RetryPolicy
from clip_client.errors import (
    ClipError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    from_rich_status,
    from_rpc_error,
    from_status,
)
from clip_client.images import ImageInput, ImageUrl, to_bytes
from clip_client.types import (
    Classification,
    ClassifyResult,
    Embeddings,
    ImageEmbedding,
    LabelScore,
    LabelSet,
    Limits,
    ModelInfo,
    Similarity,
)
from clip_contract import encodings

ImagesArg = ImageInput | Sequence[ImageInput]
Indexed = tuple[int, Any]  # (position in the input, its ImageEmbedding or Classification)


@dataclass(frozen=True)
class _Decoded:
    vectors: NDArray[np.float32]
    codes: NDArray[Any]
    scales: NDArray[np.float32]
    errors: dict[int, ClipError]


def image_list(images: ImagesArg) -> list[pb.Image]:
    """One image or a sequence of them; a 4-D array is a batch of HxWxC images."""
    if isinstance(images, list | tuple):
        return [_image(image) for image in images]
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return [_image(image) for image in images]
    return [_image(images)]  # type: ignore[arg-type]  # a str or bytes is one image, not a sequence


def _image(image: ImageInput) -> pb.Image:
    if isinstance(image, ImageUrl):
        return pb.Image(url=image.url)
    return pb.Image(data=to_bytes(image))


def _item_error(status: Any) -> ClipError | None:
    return None if status.code == 0 else from_status(status.code, status.message)


class CallBudget:
    """The time one call may take, its retries included; None is no limit."""

    def __init__(self, seconds: float | None) -> None:
        self.expires = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        return None if self.expires is None else max(0.0, self.expires - time.monotonic())


class ClientBase:
    def __init__(self, target: str | None = None, *, config: ClientConfig | None = None) -> None:
        config = config or ClientConfig()
        if target is not None:
            config = ClientConfig(**{**config.__dict__, "target": target})
        self.config = config

    # -- channel -----------------------------------------------------------------------------
    def _channel_options(self) -> list[tuple[str, Any]]:
        return [
            ("grpc.max_send_message_length", self.config.max_message_bytes),
            ("grpc.max_receive_message_length", self.config.max_message_bytes),
            # gRPC connections are long-lived: without this a client talks to one gateway forever
            ("grpc.lb_policy_name", self.config.load_balancing),
            ("grpc.max_reconnect_backoff_ms", 5000),  # a gateway back from a restart is used again soon
        ]

    def _credentials(self) -> grpc.ChannelCredentials | None:
        if not self.config.secure:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.config.root_certificates,
            private_key=self.config.client_private_key,
            certificate_chain=self.config.client_certificate_chain,
        )

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        if self.config.api_key is None:
            return ()
        return (("authorization", f"Bearer {self.config.api_key}"),)

    def _budget(self, timeout: float | None) -> CallBudget:
        return CallBudget(self.config.timeout if timeout is None else timeout)

    def _retry_delay(
        self, error: ClipError, attempt: int, budget: CallBudget, policy: RetryPolicy | None = None
    ) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to raise `error`: exponential
        backoff with full jitter, never shorter than the server's own retry delay, and never past
        the call's budget. `policy` defaults to the config's for calls (bulk passes its own)."""
        policy = policy or self.config.retry
        retryable = error.code in policy.retry_on or (isinstance(error, RateLimitedError) and policy.retry_rate_limited)
        if attempt >= policy.max_attempts or not retryable:
            return None
        delay = max(random.uniform(0, policy.backoff(attempt)), error.retry_after or 0.0)
        remaining = budget.remaining()
        if remaining is not None and delay >= remaining:
            return None
        return delay

    # -- bulk ----------------------------------------------------------------------------------
    def _ledger(
        self,
        inputs: Iterable[ImageInput],
        build: Any,
        batch_size: int | None,
        window: int | None,
        ordered: bool,
        timeout: float | None,
    ) -> Ledger[Any]:
        return Ledger.of(
            inputs,
            self.config.bulk_batch_size if batch_size is None else batch_size,
            self.config.bulk_window if window is None else window,
            build,
            lambda: CallBudget(self.config.bulk_timeout if timeout is None else timeout),
            ordered,
        )

    def _embed_stream_builder(self, encoding: str) -> Any:
        self._embed_request(None, None, encoding)  # an unknown encoding refused before any input is read

        def build(chunk_id: str, images: list[ImageInput]) -> pb.EmbedStreamRequest:
            return pb.EmbedStreamRequest(id=chunk_id, request=self._embed_request(images, None, encoding))

        return build

    def _classify_stream_builder(
        self, labels: Sequence[str] | LabelSet, templates: Sequence[str] | None, top_k: int
    ) -> Any:
        self._classify_request([], labels, templates, top_k)  # refuses a bad argument before any input is read

        def build(chunk_id: str, images: list[ImageInput]) -> pb.ClassifyStreamRequest:
            return pb.ClassifyStreamRequest(
                id=chunk_id, request=self._classify_request(images, labels, templates, top_k)
            )

        return build

    def _settle(self, ledger: Ledger[Any], answer: Any, parse: Any, failed: Any) -> list[Indexed] | NotFoundError:
        """What the answer to one stream request gives the caller now: its items' results (or, when
        it failed as a whole and is not retried, its error for each item; nothing while it waits to
        be sent again), or NotFoundError for a label set the server no longer holds."""
        chunk = ledger.answered(answer.id)
        if answer.status.code == 0:
            return ledger.deliver(parse(chunk, answer.response))
        error = from_rich_status(answer.status)
        if isinstance(error, NotFoundError):
            ledger.again(chunk, 0.0)
            return error
        delay = self._retry_delay(error, chunk.attempts, chunk.budget, self.config.bulk_retry)
        if delay is not None:
            ledger.again(chunk, delay)
            return []
        return ledger.deliver([(chunk.first + i, failed(error)) for i in range(chunk.count)])

    def _stream_broken(self, ledger: Ledger[Any], error: grpc.RpcError, broken: int, outage: CallBudget) -> float:
        """Seconds to wait before a new stream after the `broken`th stream in a row broke with
        `error` (what was out is sent again on it); raises the error where it is not retried or
        the streams have been broken for longer than `outage` allows."""
        ledger.stream_lost()
        failure = from_rpc_error(error)
        delay = self._retry_delay(failure, broken, outage, self.config.bulk_retry)
        if delay is None:
            raise failure from error
        return delay

    @staticmethod
    def _relabelled(ledger: Ledger[Any], label_set: LabelSet) -> None:
        """Every request still to be sent names `label_set` (registered again under a new id)."""
        for chunk in [*ledger.waiting, *ledger.sent.values()]:
            chunk.message.request.label_set_id = label_set.id

    def _embedded(self, encoding: str) -> Any:
        def parse(chunk: Chunk, response: pb.EmbedResponse) -> list[Indexed]:
            embeddings = self._embeddings(response, encoding)
            return [
                (
                    chunk.first + row,
                    ImageEmbedding(None, embeddings.image_errors[row])
                    if row in embeddings.image_errors
                    else ImageEmbedding(embeddings.images[row]),
                )
                for row in range(chunk.count)
            ]

        return parse

    def _classified(self) -> Any:
        def parse(chunk: Chunk, response: pb.ClassifyResponse) -> list[Indexed]:
            return [(chunk.first + row, item) for row, item in enumerate(self._classify_result(response))]

        return parse

    # -- requests ----------------------------------------------------------------------------
    def _classify_request(
        self, images: ImagesArg, labels: Sequence[str] | LabelSet, templates: Sequence[str] | None, top_k: int
    ) -> pb.ClassifyRequest:
        if isinstance(labels, LabelSet):
            if templates is not None:
                raise TypeError("a LabelSet carries its own templates: give templates to register_label_set")
            return pb.ClassifyRequest(images=image_list(images), label_set_id=labels.id, top_k=top_k)
        if isinstance(labels, str):
            raise TypeError("labels must be a sequence of strings, not one string")
        chosen = self.config.default_templates if templates is None else templates
        return pb.ClassifyRequest(
            images=image_list(images),
            labels=list(labels),
            prompt_templates=list(chosen),
            top_k=top_k,
        )

    def _register_request(self, labels: Sequence[str], templates: Sequence[str] | None) -> pb.RegisterLabelSetRequest:
        if isinstance(labels, str):
            raise TypeError("labels must be a sequence of strings, not one string")
        chosen = self.config.default_templates if templates is None else templates
        return pb.RegisterLabelSetRequest(labels=list(labels), prompt_templates=list(chosen))

    @staticmethod
    def _label_set(request: pb.RegisterLabelSetRequest, response: pb.RegisterLabelSetResponse) -> LabelSet:
        return LabelSet(response.label_set_id, tuple(request.labels), tuple(request.prompt_templates))

    @staticmethod
    def _embed_request(images: ImagesArg | None, texts: Sequence[str] | None, encoding: str) -> pb.EmbedRequest:
        if isinstance(texts, str):
            texts = [texts]
        if encoding not in encodings.BY_NAME:
            raise ValueError(f"encoding: {encoding!r} is not one of {', '.join(encodings.BY_NAME)}")
        return pb.EmbedRequest(
            images=image_list(images) if images is not None else [],
            texts=list(texts or []),
            encoding=encodings.BY_NAME[encoding].proto_value,  # type: ignore[arg-type]
        )

    @staticmethod
    def _similarity_request(images: ImagesArg, texts: Sequence[str]) -> pb.SimilarityRequest:
        if isinstance(texts, str):
            texts = [texts]
        return pb.SimilarityRequest(images=image_list(images), texts=list(texts))

    # -- responses ---------------------------------------------------------------------------
    @staticmethod
    def _classify_result(response: pb.ClassifyResponse) -> ClassifyResult:
        results = tuple(
            Classification(
                labels=tuple(LabelScore(s.label, s.index, s.probability, s.score) for s in item.labels),
                error=_item_error(item.status),
            )
            for item in response.results
        )
        return ClassifyResult(results=results, model_id=response.model_id)

    @staticmethod
    def _vectors(items: Sequence[Any], dimension: int, encoding: encodings.Encoding) -> _Decoded:
        """float32 rows (NaN for a failed item), the encoding's codes (zeros for a failed item), the
        int8 scales, and the errors by row."""
        matrix = np.full((len(items), dimension), np.nan, dtype=np.float32)
        width = dimension if encoding is not encodings.BINARY else encoding.bytes_per_vector(dimension)
        codes = np.zeros((len(items), width), dtype=encoding.dtype)
        scales = np.ones(len(items), dtype=np.float32)
        errors: dict[int, ClipError] = {}
        for row, item in enumerate(items):
            error = _item_error(item.status)
            if error is not None:
                errors[row] = error
            elif encoding is encodings.FLOAT32:
                matrix[row] = codes[row] = np.asarray(item.vector, dtype=np.float32)
            else:
                scales[row] = item.scale if encoding is encodings.INT8 else 1.0
                codes[row] = encodings.codes(item.data, encoding, dimension)
                matrix[row] = encodings.decode(item.data, encoding, dimension, scales[row])
        return _Decoded(matrix, codes, scales, errors)

    def _embeddings(self, response: pb.EmbedResponse, asked: str) -> Embeddings:
        # 0: a server from before encodings, which sends float32 whatever was asked
        encoding = encodings.BY_PROTO_VALUE.get(response.encoding or encodings.FLOAT32.proto_value)
        if encoding is None or encoding.name != asked:
            got = encoding.name if encoding else f"unknown value {response.encoding}"
            raise ServerError(f"asked for {asked} embeddings, the server sent {got} (a server without encodings?)")
        images = self._vectors(response.image_embeddings, response.dimension, encoding)
        texts = self._vectors(response.text_embeddings, response.dimension, encoding)
        return Embeddings(
            images=images.vectors,
            texts=texts.vectors,
            image_errors=images.errors,
            text_errors=texts.errors,
            text_token_counts=np.array([item.token_count for item in response.text_embeddings], dtype=np.int64),
            model_id=response.model_id,
            dimension=response.dimension,
            encoding=encoding.name,
            image_codes=images.codes,
            text_codes=texts.codes,
            image_scales=images.scales,
            text_scales=texts.scales,
        )

    @staticmethod
    def _similarity(response: pb.SimilarityResponse, n_texts: int) -> Similarity:
        scores = np.full((len(response.rows), n_texts), np.nan, dtype=np.float32)
        errors: dict[int, ClipError] = {}
        for row, item in enumerate(response.rows):
            error = _item_error(item.status)
            if error is None:
                scores[row] = np.asarray(item.scores, dtype=np.float32)
            else:
                errors[row] = error
        return Similarity(scores=scores, scale=response.scale, image_errors=errors, model_id=response.model_id)

    @staticmethod
    def _model_info(response: pb.GetModelInfoResponse) -> ModelInfo:
        limits = response.limits
        return ModelInfo(
            model_id=response.model_id,
            revision=response.revision,
            variant=pb.ModelVariant.Name(response.variant).removeprefix("MODEL_VARIANT_").lower(),
            precision=pb.Precision.Name(response.precision).removeprefix("PRECISION_").lower(),
            embedding_dimension=response.embedding_dimension,
            image_size=response.image_size,
            context_length=response.context_length,
            scale=response.scale,
            execution=response.execution,
            shortest_edge=response.shortest_edge,
            crop_size=response.crop_size or response.image_size,  # a server from before crop_size
            limits=Limits(
                max_images_per_request=limits.max_images_per_request,
                max_labels_per_request=limits.max_labels_per_request,
                max_texts_per_request=limits.max_texts_per_request,
                max_templates_per_request=limits.max_templates_per_request,
                max_label_chars=limits.max_label_chars,
                max_image_bytes=limits.max_image_bytes,
                max_image_pixels=limits.max_image_pixels,
                max_request_bytes=limits.max_request_bytes,
                image_urls=limits.image_urls,
                max_request_pixels=limits.max_request_pixels,
            ),
        )
