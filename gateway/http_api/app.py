"""The OpenAI-compatible HTTP API: /v1/embeddings, /v1/classifications, /v1/models, health.

It runs in the gateway's process and event loop and calls the same core as gRPC (same Triton
client, limits, admission, image fetching and API keys): JSON and form fields in, `calls` values
to `ClipCore`, its results out as OpenAI-shaped JSON; only the shapes differ.
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any, TypeVar

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from clip_contract import encodings
from gateway.auth import ApiKeys
from gateway.byte_budget import InFlightBytes
from gateway.calls import ClassifyCall, EmbedCall, ImageInput, ItemError
from gateway.core import ClipCore, Deadline
from gateway.http_api import bounded_json, inputs
from gateway.http_api.errors import HttpError, error_response, from_exception, item_error
from gateway.http_api.guard import Guard
from gateway.http_api.schemas import (
    Classification,
    ClassificationRequest,
    ClassificationsResponse,
    Embedding,
    EmbeddingsRequest,
    EmbeddingsResponse,
    ErrorBody,
    ErrorResponse,
    LabelScore,
    Model,
    ModelList,
    Usage,
)
from gateway.triton_adapter import ServedModel

log = logging.getLogger("gateway.http")
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "The request is invalid; `error.param` names the field.",
        401: "Missing or wrong API key.",
        404: "No such model.",
        413: "The request or one of its images is too large.",
        429: "The gateway is at its concurrency limit (gRPC and HTTP calls together); see Retry-After.",
        503: "The model server is not ready.",
        504: "The model server did not answer in time.",
    }.items()
}
UNSUPPORTED_MEDIA_TYPE: dict[str, Any] = {"model": ErrorResponse, "description": "The body is not of an accepted type."}
# Parsed by _json_request, not by FastAPI; the document still names the schema.
EMBEDDINGS_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EmbeddingsRequest"}}},
    }
}
CLASSIFICATION_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": ClassificationRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image", "labels"],
                    "properties": {
                        "image": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "Image files (or URL / data-URI strings), one part each.",
                        },
                        "labels": {"type": "array", "items": {"type": "string"}, "description": "One part per label."},
                        "templates": {"type": "array", "items": {"type": "string"}},
                        "top_k": {"type": "integer", "minimum": 0},
                        "model": {"type": "string"},
                    },
                }
            },
        },
    }
}


def create_app(core: ClipCore, keys: ApiKeys, in_flight: InFlightBytes | None = None) -> Any:
    """The ASGI application: the FastAPI routes behind the Guard."""
    config = core.config
    limits = config.limits
    started = int(time.time())
    app = FastAPI(
        title="clip-serve",
        version="1",
        summary="CLIP ViT-B/16 zero-shot classification and embeddings, OpenAI-compatible.",
        description="Authenticate with `Authorization: Bearer <key>` where the operator set keys.",
        # No viewer: Swagger UI and ReDoc load their code from a CDN, blank where there is no
        # network. /openapi.json is complete; any OpenAPI viewer or client generator reads it.
        docs_url=None,
        redoc_url=None,
    )
    app.openapi = lambda: _openapi_document(app)  # type: ignore[method-assign]

    async def served_model() -> ServedModel:
        try:
            return await core.health.served_model()
        except Exception as error:
            raise from_exception(error) from None

    def deadline() -> Deadline:
        return Deadline(config.default_timeout)

    def check_model(requested: str | None, model: ServedModel) -> None:
        if requested is not None and requested != model.model_id:  # the id as /v1/models lists it
            raise HttpError(
                404,
                f"the model {requested!r} is not served here; this server serves {model.model_id!r}",
                kind="not_found_error",
                param="model",
                code="model_not_found",
            )

    @app.exception_handler(HttpError)
    async def on_http_error(request: Request, error: HttpError) -> JSONResponse:
        return error_response(error.status, error.body, error.headers)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        invalid = _invalid(error.errors())
        return error_response(invalid.status, invalid.body)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_exception(request: Request, error: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return error_response(error.status_code, ErrorBody(message=str(error.detail), type=kind))

    @app.get("/v1/health/live", tags=["health"], summary="The gateway process is up.")
    async def live() -> dict[str, str]:
        return {"status": "live"}

    @app.get("/v1/health/ready", tags=["health"], summary="Every model the gateway needs is ready.")
    async def ready() -> JSONResponse:
        serving = core.health.ready
        return JSONResponse({"status": "ready" if serving else "not ready"}, status_code=200 if serving else 503)

    @app.get("/v1/models", response_model=ModelList, responses=ERRORS, tags=["models"])
    async def list_models() -> ModelList:
        model = await served_model()
        return ModelList(data=[Model(id=model.model_id, created=started, owned_by="clip-serve")])

    @app.get("/v1/models/{model_id:path}", response_model=Model, responses=ERRORS, tags=["models"])
    async def get_model(model_id: str) -> Model:
        model = await served_model()
        check_model(model_id, model)
        return Model(id=model.model_id, created=started, owned_by="clip-serve")

    @app.post(
        "/v1/embeddings",
        response_model=EmbeddingsResponse,
        response_model_exclude_none=True,  # `scale` only where int8 gives one
        responses={**ERRORS, 415: UNSUPPORTED_MEDIA_TYPE},
        tags=["embeddings"],
        openapi_extra=EMBEDDINGS_BODY,
    )
    async def embeddings(request: Request) -> EmbeddingsResponse:
        in_force = core.health.limits()
        body = await _json_request(
            request, EmbeddingsRequest, in_force.max_texts + (in_force.max_images or 0), "application/json"
        )
        model = await served_model()
        check_model(body.model, model)
        items = [body.input] if isinstance(body.input, str) else body.input
        if not items:
            raise HttpError(400, "input is empty: send a string or a list of strings", param="input")
        if not all(isinstance(item, str) for item in items):
            raise HttpError(400, "token arrays are not accepted: send strings", param="input")
        inputs.texts(items, "input")  # type: ignore[arg-type]
        if body.dimensions is not None and body.dimensions != model.embedding_dim:
            raise HttpError(
                400,
                f"this model's embeddings have {model.embedding_dim} dimensions; it does not shorten them",
                param="dimensions",
            )
        images: list[ImageInput] = []
        texts: list[str] = []
        order: list[tuple[str, int]] = []  # input index -> the core's field ("images" | "texts"), index there
        for index, item in enumerate(items):
            assert isinstance(item, str)
            if body.modality == "image" or (body.modality is None and inputs.is_image_data_uri(item)):
                order.append(("images", len(images)))
                images.append(inputs.image_from_string(item, f"input[{index}]"))
            else:
                order.append(("texts", len(texts)))
                texts.append(item)
        if body.user:
            log.info("embeddings", extra={"user": body.user[:64], "inputs": len(items)})
        try:
            result = await core.embed(EmbedCall(images, texts), deadline())
        except Exception as error:
            raise from_exception(error, inputs.embeddings_field(order)) from None
        data = []
        for index, (kind, position) in enumerate(order):
            vector = result.texts[position].vector if kind == "texts" else result.images[position]
            if isinstance(vector, ItemError):
                raise item_error(f"input[{index}]", vector.code, vector.message)
            data.append(_embedding(index, vector, body.encoding_format))
        tokens = sum(text.token_count for text in result.texts)
        return EmbeddingsResponse(
            data=data, model=result.model_id, usage=Usage(prompt_tokens=tokens, total_tokens=tokens)
        )

    @app.post(
        "/v1/classifications",
        response_model=ClassificationsResponse,
        responses={**ERRORS, 415: UNSUPPORTED_MEDIA_TYPE},
        tags=["classifications"],
        openapi_extra=CLASSIFICATION_BODY,
        summary="Rank labels for images (zero-shot). JSON with image URLs or data URIs, or a multipart upload.",
    )
    async def classifications(request: Request) -> ClassificationsResponse:
        in_force = core.health.limits()  # bounds how many parts a form may have
        body, images = await _classification_request(
            request, in_force.max_images or 0, in_force.max_labels, in_force.max_templates
        )
        model = await served_model()
        check_model(body.model, model)
        call = ClassifyCall(images, body.labels, body.templates or [], body.top_k)
        try:
            result = await core.classify(call, deadline())
        except Exception as error:
            raise from_exception(error, inputs.classification_field) from None
        data = []
        for index, item in enumerate(result.results):
            if isinstance(item, ItemError):
                raise item_error(f"image[{index}]", item.code, item.message)
            labels = [LabelScore(label=s.label, index=s.index, probability=s.probability, score=s.score) for s in item]
            data.append(Classification(index=index, labels=labels))
        return ClassificationsResponse(data=data, model=result.model_id)

    return Guard(
        app,
        keys=keys,
        max_body_bytes=limits.max_request_bytes,
        body_read_timeout=config.http_body_read_timeout,
        body_total_timeout=config.http_body_total_timeout,
        in_flight=in_flight,
    )


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _unsupported(content_type: str, accepted: str) -> HttpError:
    return HttpError(415, f"send {accepted}, not {content_type}", code="unsupported_media_type")


Body = TypeVar("Body", bound=BaseModel)
# JSON values a body may hold beyond its list entries: the object's own members and some slack.
BODY_MEMBERS = 16


async def _json_request(request: Request, schema: type[Body], max_entries: int, accepted: str) -> Body:
    """The body as `schema`, parsed off the event loop with a bound on its values (bounded_json):
    no valid request holds more than `max_entries` list entries, so a body of millions of values
    is refused after counting that many, before any of the per-entry work. Anything but JSON is
    415."""
    content_type = _content_type(request)
    if content_type not in ("application/json", ""):
        raise _unsupported(content_type, accepted)
    bound = max_entries + BODY_MEMBERS
    try:
        parsed = await bounded_json.parse_off_loop(await request.body(), bound)
    except bounded_json.TooManyValues:
        raise HttpError(
            400,
            f"the body holds more than {bound} JSON values: more than any request within the per-request limits can",
            code="too_many_values",
        ) from None
    except bounded_json.NotJson:
        raise HttpError(400, "the request body is not valid JSON", code="invalid_value") from None
    try:
        return schema.model_validate(parsed)
    except ValidationError as error:
        raise _invalid(error.errors()) from None


def _openapi_document(app: Any) -> dict[str, Any]:
    """FastAPI's document without the 422 responses it adds to every route: our validation errors
    are 400s in OpenAI's shape, and 422 never reaches a caller."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title, version=app.version, summary=app.summary, description=app.description, routes=app.routes
        )
        for path in document["paths"].values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        document.setdefault("components", {}).setdefault("schemas", {})["EmbeddingsRequest"] = (
            EmbeddingsRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        )
        for unused in ("HTTPValidationError", "ValidationError"):
            document.get("components", {}).get("schemas", {}).pop(unused, None)
        app.openapi_schema = document
    return dict(app.openapi_schema)


def _embedding(index: int, vector: Any, encoding_format: str) -> Embedding:
    if encoding_format == "float":
        return Embedding(index=index, embedding=list(np.asarray(vector, dtype=np.float32).tolist()))
    encoding = encodings.FLOAT32 if encoding_format == "base64" else encodings.BY_NAME[encoding_format]
    (data,), (scale,) = encodings.encode(np.asarray(vector, dtype=np.float32)[None], encoding)
    return Embedding(
        index=index,
        embedding=base64.b64encode(data).decode("ascii"),
        scale=float(scale) if encoding is encodings.INT8 else None,
    )


def _invalid(errors: Any) -> HttpError:
    """A 400 from pydantic's first complaint, worded for a person, with the field as `param`."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(location) or None
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    if first.get("type") == "json_invalid":
        message = "the request body is not valid JSON"
    return HttpError(400, message, param=param, code="invalid_value")


async def _classification_request(
    request: Request, max_images: int, max_labels: int, max_templates: int
) -> tuple[ClassificationRequest, list[ImageInput]]:
    content_type = _content_type(request)
    if content_type == "multipart/form-data":
        return await _from_form(request, max_images, max_labels, max_templates)
    body = await _json_request(
        request,
        ClassificationRequest,
        max_images + max_labels + max_templates,
        "application/json or multipart/form-data",
    )
    inputs.texts(body.labels, "labels")
    inputs.texts(body.templates or [], "templates")
    strings = [body.image] if isinstance(body.image, str) else body.image
    fields = ["image"] if isinstance(body.image, str) else [f"image[{i}]" for i in range(len(strings))]
    return body, [inputs.image_from_string(value, field) for value, field in zip(strings, fields, strict=True)]


async def _from_form(
    request: Request, max_images: int, max_labels: int, max_templates: int
) -> tuple[ClassificationRequest, list[ImageInput]]:
    try:
        form = await request.form(max_files=max_images + 1, max_fields=max_labels + max_templates + 8)
    except Exception as error:  # a malformed multipart body, or more parts than any valid request has
        raise HttpError(400, f"the multipart body is not acceptable: {error}") from None
    images: list[ImageInput] = []
    for index, part in enumerate(form.getlist("image")):
        if isinstance(part, UploadFile):
            images.append(ImageInput(data=await part.read()))
        else:
            images.append(inputs.image_from_string(part, f"image[{index}]"))
    if not images:
        raise HttpError(400, "image: upload at least one image file as a part named image", param="image")
    try:
        body = ClassificationRequest.model_validate(
            {
                "model": form.get("model"),
                "image": [""] * len(images),  # the images themselves are in `images`
                "labels": form.getlist("labels"),
                "templates": form.getlist("templates") or None,
                "top_k": form.get("top_k") or 0,
            }
        )
    except ValidationError as error:  # e.g. a file where a label belongs, or top_k "many"
        raise _invalid(error.errors()) from None
    return body, images
