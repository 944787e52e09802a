"""Typed results of clip-serve calls."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from clip_client.errors import ClipError


@dataclass(frozen=True)
class LabelScore:
    label: str
    index: int  # position of the label in the request
    probability: float  # softmax over the request's labels, in [0, 1]
    score: float  # scaled cosine, exp(logit_scale) * cos(image, label text)


@dataclass(frozen=True)
class Classification:
    """Ranked labels of one image, or the error that image got."""

    labels: tuple[LabelScore, ...]
    error: ClipError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def top(self) -> LabelScore:
        """The most probable label; raises the image's error if it has one."""
        if self.error is not None:
            raise self.error
        return self.labels[0]


@dataclass(frozen=True)
class ClassifyResult:
    """One Classification per request image, in order; iterable and indexable."""

    results: tuple[Classification, ...]
    model_id: str

    def __iter__(self) -> Iterator[Classification]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> Classification:
        return self.results[index]


@dataclass(frozen=True)
class LabelSet:
    """Labels and templates the server keeps under `id` (register_label_set); classify takes it in
    place of labels, sends only the id, and registers it again by itself if the server lost it."""

    id: str
    labels: tuple[str, ...]
    templates: tuple[str, ...]


@dataclass(frozen=True)
class Embeddings:
    """Unit-norm float32 vectors; a failed item's row is NaN and its error is in *_errors.

    With an `encoding` other than float32 (clip_contract.encodings), `images` and `texts` are the
    vectors decoded back to float32 (int8: codes x scale; binary: +-1/sqrt(dimension) per sign bit)
    and *_codes are what came over the wire: float16 values, int8 codes (with *_scales), or
    binary's packed sign bits [n, dimension / 8]; a failed item's codes are zeros."""

    images: NDArray[np.float32]  # [n_images, dimension]
    texts: NDArray[np.float32]  # [n_texts, dimension]
    image_errors: Mapping[int, ClipError]
    text_errors: Mapping[int, ClipError]
    text_token_counts: NDArray[np.int64]  # [n_texts]: CLIP tokens each text was encoded as
    model_id: str
    dimension: int
    encoding: str  # float32, float16, int8 or binary
    image_codes: NDArray[Any]
    text_codes: NDArray[Any]
    image_scales: NDArray[np.float32]  # [n_images]: int8 only, else 1.0
    text_scales: NDArray[np.float32]

    def raise_for_errors(self) -> None:
        for error in [*self.image_errors.values(), *self.text_errors.values()]:
            raise error


@dataclass(frozen=True)
class ImageEmbedding:
    """One image of embed_many: its unit-norm float32 vector (decoded from the encoding asked for),
    or the error it got (`vector` is then None)."""

    vector: NDArray[np.float32] | None
    error: ClipError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Similarity:
    """scale * cosine for every (image, text) pair; a failed image's row is NaN."""

    scores: NDArray[np.float32]  # [n_images, n_texts]
    scale: float
    image_errors: Mapping[int, ClipError]
    model_id: str


@dataclass(frozen=True)
class Limits:
    max_images_per_request: int
    max_labels_per_request: int
    max_texts_per_request: int
    max_templates_per_request: int
    max_label_chars: int
    max_image_bytes: int
    max_image_pixels: int
    max_request_bytes: int
    image_urls: bool  # whether ImageUrl inputs are fetched by this server
    max_request_pixels: int = 0  # decoded pixels of a request's images together; 0: a server from before it


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    revision: str
    variant: str  # "full" or "demo"
    precision: str  # a name in clip_contract.precisions: "fp32", "bf16", "fp16" or "int8"
    embedding_dimension: int
    image_size: int  # the image tower's input side: crop_size, kept for code written before it
    context_length: int
    scale: float
    limits: Limits
    execution: str = ""  # how the server's encoders run and why, for people
    shortest_edge: int = 0  # an image's shorter side is resized to this (bicubic) ...
    crop_size: int = 0  # ... then its centre crop_size x crop_size pixels are encoded
