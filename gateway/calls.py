"""The service's own requests and results: plain typed values, no protobuf, no JSON.

gRPC (`grpc_api`) and HTTP (`http_api`) turn what their callers send into these, call
`core.ClipCore`, and turn its results back into their own shapes. A field the core names in an
error is a `Field` (data, not a path string), so each transport renames it in its own vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from numpy.typing import NDArray

Vector = NDArray[Any]  # float32 [dimension], unit norm


@dataclass(frozen=True)
class Field:
    """Where in a request a problem is: `name` (the core's field), the entry's `index` in it, and
    the `part` of that entry (an image's `data` or `url`)."""

    name: str
    index: int | None = None
    part: str | None = None

    @property
    def path(self) -> str:
        """As clip.v1's BadRequest names it: images[3].data, labels[2], top_k."""
        path = self.name if self.index is None else f"{self.name}[{self.index}]"
        return path if self.part is None else f"{path}.{self.part}"


@dataclass(frozen=True)
class ImageInput:
    """One image of a request: its encoded bytes, or a URL for the gateway to fetch."""

    data: bytes = b""
    url: str | None = None


@dataclass(frozen=True)
class ClassifyCall:
    images: list[ImageInput]
    labels: list[str]
    templates: list[str] = field(default_factory=list)  # empty: the configured default template
    top_k: int = 0  # 0: every label
    label_set_id: str = ""  # the labels came from this registered set: scored in the gateway


@dataclass(frozen=True)
class EmbedCall:
    images: list[ImageInput]
    texts: list[str]


@dataclass(frozen=True)
class SimilarityCall:
    images: list[ImageInput]
    texts: list[str]


@dataclass(frozen=True)
class ItemError:
    """Why one image of a request has no result: a google.rpc code and a message for the caller."""

    code: int
    message: str


@dataclass(frozen=True)
class LabelScore:
    label: str  # as the caller sent it
    index: int  # its position in the request's labels
    probability: float
    score: float  # the scaled cosine similarity (the logit)


@dataclass(frozen=True)
class TextEmbedding:
    vector: Vector
    token_count: int


@dataclass(frozen=True)
class ClassifyResult:
    model_id: str
    results: list[list[LabelScore] | ItemError]  # one per request image, best label first


@dataclass(frozen=True)
class EmbedResult:
    model_id: str
    dimension: int
    texts: list[TextEmbedding]  # one per request text
    images: list[Vector | ItemError]  # one per request image


@dataclass(frozen=True)
class SimilarityResult:
    model_id: str
    scale: float
    rows: list[Vector | ItemError]  # one per request image: a score per text
