"""Request and response bodies of the HTTP API, in OpenAI's shapes where OpenAI has one.

These models are the OpenAPI document (`GET /openapi.json`): every field says what it means.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Upper bounds on numbers a caller sends, far above anything valid, so that no number can be big
# enough to break the parsing behind it; the service's own checks then say what is valid.
MAX_TOP_K = 1_000_000
MAX_DIMENSIONS = 1_000_000

IMAGE_INPUT = (
    "An image: an http(s) URL the server fetches (where the operator allows it), or a data URI "
    '"data:image/png;base64,...". Multipart uploads are accepted by /v1/classifications.'
)


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="The served model's id, as GET /v1/models lists it.")
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description=(
            "What to embed: one string or a list. Without `modality`, a string that is a data URI "
            '"data:image/...;base64,..." is an image (the NV-CLIP NIM convention) and any other string '
            'is a text. With `modality: "image"` (the infinity convention) every string is an image URL '
            'or data URI; with `modality: "text"` every string is a text. Token arrays are not accepted.'
        )
    )
    encoding_format: Literal["float", "base64", "float16", "int8", "binary"] = Field(
        "float",
        description=(
            "float: JSON numbers; base64: little-endian float32 bytes, base64-encoded (OpenAI's two). "
            "float16, int8 and binary: the vector in that encoding (docs/embedding-encodings.md), "
            "base64-encoded: float16 little-endian halves; int8 signed bytes q with the vector ~ q * "
            "`scale`; binary sign bits, 8 to a byte, the first dimension in the highest bit."
        ),
    )
    dimensions: int | None = Field(
        None,
        ge=1,
        le=MAX_DIMENSIONS,
        description="Must equal the model's embedding size if given; CLIP vectors are not shortened.",
    )
    user: str | None = Field(None, description="The caller's end-user id, logged with the request.")
    modality: Literal["text", "image"] | None = Field(None, description="Treat every input as this kind.")


class Embedding(BaseModel):
    object: Literal["embedding"] = Field("embedding", description='Always "embedding".')
    index: int = Field(description="Position of the input this vector is for.")
    embedding: list[float] | str = Field(description="Unit-norm vector, or its base64 form in the encoding asked for.")
    scale: float | None = Field(None, description="int8 only: the vector is the decoded bytes times this.")


class Usage(BaseModel):
    prompt_tokens: int = Field(description="CLIP BPE tokens of the text inputs (start and end tokens included).")
    total_tokens: int = Field(description="Equal to prompt_tokens: images count no tokens.")


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = Field("list", description='Always "list".')
    data: list[Embedding] = Field(description="One vector per input, in input order.")
    model: str = Field(description="The id of the model that answered.")
    usage: Usage = Field(description="Tokens the text inputs used.")


class ClassificationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="The served model's id; optional.")
    image: str | list[str] = Field(description=IMAGE_INPUT + " A list classifies several images.")
    labels: list[str] = Field(description='Candidate labels, e.g. ["cat", "dog"].')
    templates: list[str] | None = Field(
        None,
        description='Prompt templates, each holding "{}" once; a label\'s score averages them. '
        'Default: "a photo of a {}."',
    )
    top_k: int = Field(
        0, ge=0, le=MAX_TOP_K, description="Labels returned per image, best first; 0 returns all; at most the labels."
    )


class LabelScore(BaseModel):
    label: str = Field(description="The label as sent.")
    index: int = Field(description="Position of the label in the request.")
    probability: float = Field(description="Softmax over the request's labels.")
    score: float = Field(description="The model's scaled cosine similarity (logit), before the softmax.")


class Classification(BaseModel):
    object: Literal["classification"] = Field("classification", description='Always "classification".')
    index: int = Field(description="Position of the image in the request.")
    labels: list[LabelScore] = Field(description="The labels ranked by probability, best first (top_k of them).")


class ClassificationsResponse(BaseModel):
    object: Literal["list"] = Field("list", description='Always "list".')
    data: list[Classification] = Field(description="One entry per image, in request order.")
    model: str = Field(description="The id of the model that answered.")


class Model(BaseModel):
    id: str = Field(description="The model's id: its Hub id, or a local checkpoint's name.")
    object: Literal["model"] = Field("model", description='Always "model".')
    created: int = Field(description="Unix time the model server started serving it (0 if unknown).")
    owned_by: str = Field(description='Always "clip-serve".')


class ModelList(BaseModel):
    object: Literal["list"] = Field("list", description='Always "list".')
    data: list[Model] = Field(description="The one model this server serves.")


class ErrorBody(BaseModel):
    message: str = Field(description="What is wrong, for a person to read.")
    type: str = Field(description="invalid_request_error, authentication_error, not_found_error, server_error, ...")
    param: str | None = Field(None, description="The request field at fault, e.g. input[2].")
    code: str | None = Field(None, description="A stable machine-readable code, e.g. model_not_found, overloaded.")


class ErrorResponse(BaseModel):
    error: ErrorBody = Field(description="Why the request failed (OpenAI's error shape).")
