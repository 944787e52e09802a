"""clip-serve client: zero-shot classification and CLIP embeddings over gRPC.

    from clip_client import ClipClient

    with ClipClient("localhost:50051") as client:
        for item in client.classify(["cat.jpg", "dog.png"], ["cat", "dog", "car"]):
            print(item.top.label, item.top.probability)

`AsyncClipClient` has the same methods as coroutines. Errors are `ClipError` subclasses
(see clip_client.errors); one bad image in a batch is reported on its own result instead.
"""

from clip_client.aio import AsyncClipClient
from clip_client.config import BULK_RETRY, NO_RETRY, ClientConfig, RetryPolicy
from clip_client.errors import (
    AuthenticationError,
    CancelledError,
    ClipError,
    DeadlineExceededError,
    FieldViolation,
    InvalidRequestError,
    NotFoundError,
    OutputError,
    OverloadedError,
    RateLimitedError,
    RequestTooLargeError,
    ServerError,
    UnavailableError,
)
from clip_client.images import ImageInput, ImageUrl
from clip_client.sync import ClipClient
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

__all__ = [
    "BULK_RETRY",
    "NO_RETRY",
    "AsyncClipClient",
    "AuthenticationError",
    "CancelledError",
    "Classification",
    "ClassifyResult",
    "ClientConfig",
    "ClipClient",
    "ClipError",
    "DeadlineExceededError",
    "Embeddings",
    "FieldViolation",
    "ImageEmbedding",
    "ImageInput",
    "ImageUrl",
    "InvalidRequestError",
    "LabelScore",
    "LabelSet",
    "Limits",
    "ModelInfo",
    "NotFoundError",
    "OutputError",
    "OverloadedError",
    "RateLimitedError",
    "RequestTooLargeError",
    "RetryPolicy",
    "ServerError",
    "Similarity",
    "UnavailableError",
]
