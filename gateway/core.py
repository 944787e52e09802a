"""The service, whatever the transport: check a call, admit it, do its model work in Triton, and
return its result with one outcome per image.

The model work (decode, tokenize, encode, templates, similarity, softmax) happens in Triton; the
core only checks calls, routes them, and ranks the returned rows. The one exception: a Classify by
label set id, or one whose images go to Triton in several parts (image_results: a dead gateway
leaves at most one part running there), is scored here against label embeddings from Triton's
text encoder (kept for a label set: gateway.label_matrices), with the arithmetic Triton's
similarity step uses (clip_contract.similarity). gRPC (`grpc_api`) and HTTP
(`http_api`) are adapters over it: each turns its callers' messages into `calls` values and the
results back, and names the fields of a `RequestError` in its own vocabulary.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from clip_contract import similarity
from gateway import metrics, validation
from gateway.admission import Admission
from gateway.auth import TENANT
from gateway.calls import (
    ClassifyCall,
    ClassifyResult,
    EmbedCall,
    EmbedResult,
    Field,
    ItemError,
    LabelScore,
    SimilarityCall,
    SimilarityResult,
    TextEmbedding,
    Vector,
)
from gateway.config import GatewayConfig, Limits
from gateway.errors import invalid
from gateway.health import HealthWatcher
from gateway.image_results import ImageBatch
from gateway.image_sources import GatheredImages, ImageSources
from gateway.label_matrices import LabelMatrices
from gateway.label_sets import LabelSet, LabelSets
from gateway.triton_adapter import ImageOutcomes, ServedModel, TritonAdapter

NOTHING: NDArray[Any] = np.empty((0, 0), dtype=np.float32)  # the result when no image was usable


class Deadline:
    """When the caller stops waiting, to pass on to Triton as each call's remaining time."""

    def __init__(self, seconds: float) -> None:
        self.expires = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.001, self.expires - time.monotonic())


def ranked(labels: list[str], logits: NDArray[Any], probs: NDArray[Any], top_k: int) -> list[LabelScore]:
    """One image's labels, most probable first (ties in request order), the first `top_k` (0: all)."""
    order = np.argsort(-probs, kind="stable")
    if top_k:
        order = order[:top_k]
    return [LabelScore(labels[i], int(i), float(probs[i]), float(logits[i])) for i in order]


def count_errors(method: str, rows: list[int | ItemError]) -> None:
    metrics.IMAGE_ERRORS.labels(method).inc(sum(isinstance(row, ItemError) for row in rows))


def record_sizes(method: str, images: int, labels: int) -> None:
    metrics.IMAGES.labels(method).observe(images)
    metrics.LABELS.labels(method).observe(labels)


class ClipCore:
    def __init__(
        self, triton: TritonAdapter, health: HealthWatcher, config: GatewayConfig, images: ImageSources
    ) -> None:
        self.triton = triton
        self.health = health
        self.config = config
        self.images = images
        self.admission = Admission(config)
        self.label_sets = LabelSets(config.max_label_set_bytes, config.key_slot_share)
        self.label_matrices = LabelMatrices(config.max_label_set_bytes)

    @property
    def fetches_urls(self) -> bool:
        return self.images.fetcher is not None

    async def model(self) -> tuple[ServedModel, Limits]:
        """The model that answers and the limits in force (the repository's filled in)."""
        return await self.health.served_model(), self.health.limits()

    async def _fetch(self, gathered: GatheredImages, limits: Limits, deadline: Deadline) -> GatheredImages:
        """The image URLs fetched, and their pixels charged to the key's rate before decoding."""
        fetched = await self.images.fetch(gathered, limits, deadline.remaining())
        self.admission.charge_pixels(sum(fetched.pixels) - sum(gathered.pixels))
        return fetched

    async def register_label_set(self, labels: list[str], templates: list[str]) -> tuple[str, int]:
        """The set checked as Classify checks labels and templates, and kept for the caller's key;
        its id and its number of labels."""
        _, limits = await self.model()
        checked = validation.check_texts(labels, limits, field="labels", maximum=limits.max_labels, required=True)
        validation.check_templates(templates, len(checked), limits, self.config.default_template)
        label_set = LabelSet(tuple(labels), tuple(templates))
        async with self.admission.enter(0, 0):  # no model work, but the key's request rate applies
            return self.label_sets.register(TENANT.get(), label_set), len(labels)

    def label_set(self, label_set_id: str) -> LabelSet:
        """The caller's key's set of that id; NOT_FOUND when this gateway does not hold it."""
        return self.label_sets.get(TENANT.get(), label_set_id)

    async def _prompt_matrix(
        self, labels: list[str], templates: list[str], limits: Limits, deadline: Deadline
    ) -> NDArray[Any]:
        """The unit label embeddings [labels, dim] of `labels` under `templates`, from Triton's text
        encoder (at most --max-texts prompts to a call)."""
        texts = similarity.prompts(labels, templates)
        parts = []
        for start in range(0, len(texts), limits.max_texts):
            embeds, _ = await self.triton.embed_texts(texts[start : start + limits.max_texts], deadline.remaining())
            parts.append(embeds.astype(np.float32))
        return similarity.prompt_ensemble(np.concatenate(parts), len(templates)).astype(np.float32)

    async def _label_matrix(
        self, label_set_id: str, labels: list[str], templates: list[str], limits: Limits, deadline: Deadline
    ) -> NDArray[Any]:
        """The set's unit label embeddings [labels, dim]: kept, or computed now and kept."""
        key = (label_set_id, tuple(templates))
        found = self.label_matrices.get(key)
        if found is not None:
            return found
        matrix = await self._prompt_matrix(labels, templates, limits, deadline)
        self.label_matrices.put(key, matrix)
        return matrix

    async def _image_embeddings(
        self, parts: list[list[bytes]], deadline: Deadline
    ) -> tuple[NDArray[Any], ImageOutcomes]:
        """IMAGE_EMBEDS [usable images, dim] and each sent image's outcome, a Triton call per part,
        one after another (the next is not sent once the caller has gone)."""
        answers = [await self.triton.embed_images(part, deadline.remaining()) for part in parts]
        return np.concatenate([vectors for vectors, _ in answers]), ImageOutcomes.joined([o for _, o in answers])

    async def _scores(
        self,
        batch: ImageBatch,
        labels: list[str],
        templates: list[str],
        model: ServedModel,
        limits: Limits,
        deadline: Deadline,
        label_set_id: str = "",
    ) -> tuple[tuple[NDArray[Any], NDArray[Any]], ImageOutcomes]:
        """LOGITS and PROBS [usable images, labels] and each sent image's outcome. Triton's
        ensemble scores a batch that goes in one part; a label set's, and a batch in several parts,
        are scored here against label embeddings encoded once."""
        parts = list(batch.parts(self.config.triton_call_pixels))
        if len(parts) == 1 and not label_set_id:
            return await self.triton.classify(parts[0], labels, templates, deadline.remaining())
        if label_set_id:
            matrix = await self._label_matrix(label_set_id, labels, templates, limits, deadline)
        else:
            matrix = await self._prompt_matrix(labels, templates, limits, deadline)
        vectors, outcomes = await self._image_embeddings(parts, deadline)
        return similarity.scores(vectors, matrix, np.float32(model.scale)), outcomes

    async def classify(self, call: ClassifyCall, deadline: Deadline) -> ClassifyResult:
        model, limits = await self.model()
        gathered = await self.images.check(call.images, limits, required=True)
        labels = validation.check_texts(call.labels, limits, field="labels", maximum=limits.max_labels, required=True)
        templates = validation.check_templates(call.templates, len(labels), limits, self.config.default_template)
        validation.check_top_k(call.top_k, len(labels))
        async with self.admission.enter(len(call.images), len(labels) * len(templates), sum(gathered.pixels)):
            fetched = await self._fetch(gathered, limits, deadline)
            record_sizes("Classify", len(fetched.data), len(labels))
            batch = ImageBatch.of(fetched.data, fetched.failed, fetched.pixels)
            logits = probs = NOTHING
            outcomes = None
            if batch.data:
                (logits, probs), outcomes = await self._scores(
                    batch, labels, templates, model, limits, deadline, call.label_set_id
                )
        rows = batch.rows(outcomes)
        count_errors("Classify", rows)
        return ClassifyResult(
            model.model_id,
            [
                row if isinstance(row, ItemError) else ranked(call.labels, logits[row], probs[row], call.top_k)
                for row in rows
            ],
        )

    async def embed(self, call: EmbedCall, deadline: Deadline) -> EmbedResult:
        model, limits = await self.model()
        gathered = await self.images.check(call.images, limits, required=False)
        texts = validation.check_texts(call.texts, limits, field="texts", maximum=limits.max_texts, required=False)
        if not call.images and not texts:
            raise invalid(Field("images"), "send at least one image or one text")
        async with self.admission.enter(len(call.images), len(texts), sum(gathered.pixels)):
            fetched = await self._fetch(gathered, limits, deadline)
            record_sizes("Embed", len(fetched.data), len(texts))
            text_embeddings: list[TextEmbedding] = []
            if texts:
                vectors, token_counts = await self.triton.embed_texts(texts, deadline.remaining())
                metrics.TENANT_TEXT_TOKENS.labels(TENANT.get()).inc(int(token_counts.sum()))
                text_embeddings = [
                    TextEmbedding(vector, int(count)) for vector, count in zip(vectors, token_counts, strict=True)
                ]
            batch = ImageBatch.of(fetched.data, fetched.failed, fetched.pixels)
            image_vectors = NOTHING
            outcomes = None
            if batch.data:
                image_vectors, outcomes = await self._image_embeddings(
                    list(batch.parts(self.config.triton_call_pixels)), deadline
                )
        rows = batch.rows(outcomes)
        count_errors("Embed", rows)
        images: list[Vector | ItemError] = [row if isinstance(row, ItemError) else image_vectors[row] for row in rows]
        return EmbedResult(model.model_id, model.embedding_dim, text_embeddings, images)

    async def similarity(self, call: SimilarityCall, deadline: Deadline) -> SimilarityResult:
        model, limits = await self.model()
        gathered = await self.images.check(call.images, limits, required=True)
        texts = validation.check_texts(call.texts, limits, field="texts", maximum=limits.max_labels, required=True)
        async with self.admission.enter(len(call.images), len(texts), sum(gathered.pixels)):
            fetched = await self._fetch(gathered, limits, deadline)
            record_sizes("Similarity", len(fetched.data), len(texts))
            batch = ImageBatch.of(fetched.data, fetched.failed, fetched.pixels)
            scores = NOTHING
            outcomes = None
            if batch.data:
                # Texts verbatim: the identity template, so the prompt ensemble is a no-op.
                (scores, _), outcomes = await self._scores(batch, texts, ["{}"], model, limits, deadline)
        rows = batch.rows(outcomes)
        count_errors("Similarity", rows)
        result: list[Vector | ItemError] = [row if isinstance(row, ItemError) else scores[row] for row in rows]
        return SimilarityResult(model.model_id, model.scale, result)
