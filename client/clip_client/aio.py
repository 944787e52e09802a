"""The asyncio client."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import grpc
import grpc.aio

from clip_api import clip_service_pb2 as pb
from clip_api import clip_service_pb2_grpc
from clip_client._base import CallBudget, ClientBase, ImagesArg, Indexed
from clip_client.bulk import Ledger
from clip_client.config import ClientConfig
from clip_client.errors import NotFoundError, from_rpc_error
from clip_client.images import ImageInput
from clip_client.types import (
    Classification,
    ClassifyResult,
    Embeddings,
    ImageEmbedding,
    LabelSet,
    ModelInfo,
    Similarity,
)


class AsyncClipClient(ClientBase):
    """asyncio clip-serve client; use as an async context manager or await close().

    async with AsyncClipClient("localhost:50051") as client:
        result = await client.classify("cat.jpg", ["cat", "dog"])
    """

    def __init__(self, target: str | None = None, *, config: ClientConfig | None = None) -> None:
        super().__init__(target, config=config)
        credentials = self._credentials()
        options = self._channel_options()
        self._channel = (
            grpc.aio.secure_channel(self.config.target, credentials, options=options)
            if credentials is not None
            else grpc.aio.insecure_channel(self.config.target, options=options)
        )
        self._stub = clip_service_pb2_grpc.ClipServiceStub(self._channel)

    async def _call(self, method: str, request: Any, timeout: float | None) -> Any:
        budget = self._budget(timeout)
        for attempt in itertools.count(1):
            try:
                return await getattr(self._stub, method)(request, timeout=budget.remaining(), metadata=self._metadata())
            except grpc.RpcError as error:
                failure = from_rpc_error(error)
                delay = self._retry_delay(failure, attempt, budget)
                if delay is None:
                    raise failure from error
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # itertools.count never ends

    async def classify(
        self,
        images: ImagesArg,
        labels: Sequence[str] | LabelSet,
        *,
        templates: Sequence[str] | None = None,
        top_k: int = 0,
        timeout: float | None = None,
    ) -> ClassifyResult:
        """Rank `labels` for each image. `templates` like "a photo of a {}." are averaged CLIP-style.
        `labels` may be a LabelSet (register_label_set): only its id is sent, and where the server
        no longer holds it (NOT_FOUND) it is registered again and the call made once more."""
        request = self._classify_request(images, labels, templates, top_k)
        budget = self._budget(timeout)  # one for the call, the registering again and its retry
        try:
            response: pb.ClassifyResponse = await self._call("Classify", request, budget.remaining())
        except NotFoundError:
            if not isinstance(labels, LabelSet):
                raise
            again = await self.register_label_set(labels.labels, templates=labels.templates, timeout=budget.remaining())
            request.label_set_id = again.id
            response = await self._call("Classify", request, budget.remaining())
        return self._classify_result(response)

    async def register_label_set(
        self, labels: Sequence[str], *, templates: Sequence[str] | None = None, timeout: float | None = None
    ) -> LabelSet:
        """Keep `labels` (and `templates`, default as classify's) on the server under an id; pass the
        LabelSet to classify in place of labels."""
        request = self._register_request(labels, templates)
        response: pb.RegisterLabelSetResponse = await self._call("RegisterLabelSet", request, timeout)
        return self._label_set(request, response)

    async def embed(
        self,
        images: ImagesArg | None = None,
        texts: Sequence[str] | None = None,
        *,
        encoding: str = "float32",
        timeout: float | None = None,
    ) -> Embeddings:
        """Unit-norm embeddings of images and/or texts; `encoding` (float32, float16, int8, binary)
        is how they travel (clip_contract.encodings)."""
        response: pb.EmbedResponse = await self._call("Embed", self._embed_request(images, texts, encoding), timeout)
        return self._embeddings(response, encoding)

    async def similarity(self, images: ImagesArg, texts: Sequence[str], *, timeout: float | None = None) -> Similarity:
        """scale * cosine between every image and every text (texts verbatim, no template)."""
        request = self._similarity_request(images, texts)
        response: pb.SimilarityResponse = await self._call("Similarity", request, timeout)
        return self._similarity(response, len(request.texts))

    async def embed_many(
        self,
        images: Iterable[ImageInput],
        *,
        encoding: str = "float32",
        ordered: bool = True,
        batch_size: int | None = None,
        window: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[tuple[int, ImageEmbedding]]:
        """As ClipClient.embed_many: (position, ImageEmbedding) for every image, over one stream."""
        ledger = self._ledger(images, self._embed_stream_builder(encoding), batch_size, window, ordered, timeout)
        async for item in self._stream(
            "EmbedStream", ledger, self._embedded(encoding), lambda e: ImageEmbedding(None, e)
        ):
            yield item

    async def classify_many(
        self,
        images: Iterable[ImageInput],
        labels: Sequence[str] | LabelSet,
        *,
        templates: Sequence[str] | None = None,
        top_k: int = 0,
        ordered: bool = True,
        batch_size: int | None = None,
        window: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[tuple[int, Classification]]:
        """As ClipClient.classify_many: (position, Classification) for every image, over one stream."""
        if not isinstance(labels, LabelSet) and not isinstance(labels, str):
            labels = await self.register_label_set(labels, templates=templates, timeout=timeout)
            templates = None
        label_set = [labels]

        async def relabel() -> None:
            assert isinstance(label_set[0], LabelSet)
            old = label_set[0]
            label_set[0] = await self.register_label_set(old.labels, templates=old.templates, timeout=timeout)
            self._relabelled(ledger, label_set[0])

        ledger = self._ledger(
            images, self._classify_stream_builder(labels, templates, top_k), batch_size, window, ordered, timeout
        )
        async for item in self._stream(
            "ClassifyStream", ledger, self._classified(), lambda e: Classification((), e), relabel
        ):
            yield item

    async def _stream(
        self, method: str, ledger: Ledger[Any], parse: Any, failed: Any, relabel: Any = None
    ) -> AsyncIterator[Indexed]:
        """Run `ledger`'s requests over streams of `method` until every input is answered."""
        broken = 0  # streams broken in a row, for their backoff
        outage = CallBudget(None)  # a run of broken streams gets one stream request's time budget
        while not ledger.done:
            outbox: asyncio.Queue[Any] = asyncio.Queue()

            async def requests(box: asyncio.Queue[Any] = outbox) -> AsyncIterator[Any]:
                while (message := await box.get()) is not None:
                    yield message

            call = getattr(self._stub, method)(requests(), metadata=self._metadata())
            try:
                await self._send(ledger, outbox)
                async for answer in call:
                    broken = 0
                    settled = self._settle(ledger, answer, parse, failed)
                    if isinstance(settled, NotFoundError):
                        if relabel is None:
                            raise settled
                        await relabel()
                        settled = []
                    for item in settled:
                        yield item
                    await self._send(ledger, outbox)
                ledger.stream_lost()  # the server ended the stream early: what was out goes again
            except grpc.RpcError as error:
                broken += 1
                if broken == 1:
                    outage = CallBudget(self.config.bulk_timeout)
                await asyncio.sleep(self._stream_broken(ledger, error, broken, outage))
            finally:
                outbox.put_nowait(None)
                call.cancel()

    @staticmethod
    async def _send(ledger: Ledger[Any], outbox: asyncio.Queue[Any]) -> None:
        """As ClipClient._send."""
        if ledger.only_waiting:
            await asyncio.sleep(ledger.seconds_to_next())
        for message in ledger.messages():
            outbox.put_nowait(message)

    async def model_info(self, *, timeout: float | None = None) -> ModelInfo:
        response: pb.GetModelInfoResponse = await self._call("GetModelInfo", pb.GetModelInfoRequest(), timeout)
        return self._model_info(response)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClipClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
