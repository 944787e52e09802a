"""Failures as OpenAI-shaped JSON errors with the HTTP status a caller of OpenAI's API expects.

Service failures arrive as the same exceptions the gRPC methods see; they go through the one
mapping to a google.rpc.Status (gateway.errors.to_status) and from its code to HTTP here, so the
two APIs cannot disagree about what went wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from fastapi.responses import JSONResponse
from google.rpc import code_pb2

from gateway.admission import Busy, RateLimited
from gateway.byte_budget import InFlightFull
from gateway.calls import Field
from gateway.errors import RequestError, to_status
from gateway.http_api.schemas import ErrorBody, ErrorResponse

# google.rpc code -> (HTTP status, OpenAI error type)
_HTTP: dict[int, tuple[int, str]] = {
    code_pb2.INVALID_ARGUMENT: (400, "invalid_request_error"),
    code_pb2.RESOURCE_EXHAUSTED: (413, "invalid_request_error"),
    code_pb2.UNAUTHENTICATED: (401, "authentication_error"),
    code_pb2.NOT_FOUND: (404, "not_found_error"),
    code_pb2.UNAVAILABLE: (503, "service_unavailable_error"),
    code_pb2.DEADLINE_EXCEEDED: (504, "timeout_error"),
    code_pb2.CANCELLED: (503, "service_unavailable_error"),
    code_pb2.INTERNAL: (500, "server_error"),
}


class HttpError(Exception):
    """An error answer decided by the HTTP layer itself."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(message=message, type=kind, param=param, code=code)
        self.headers = headers


def error_response(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=body).model_dump(), status_code=status, headers=headers)


def _core_name(field: Field) -> str:
    return field.path


def from_exception(error: BaseException, field_name: Callable[[Field], str] = _core_name) -> HttpError:
    """Any failure of the core, as an HttpError; `field_name` names a field at fault as the HTTP
    caller knows it."""
    if isinstance(error, HttpError):
        return error
    if isinstance(error, RateLimited):
        headers = {"Retry-After": str(max(1, math.ceil(error.retry_after)))}
        return HttpError(429, str(error), kind="rate_limit_error", code=error.http_code, headers=headers)
    if isinstance(error, Busy | InFlightFull):
        retry_after = str(max(1, math.ceil(error.retry_after)))
        return HttpError(
            429, str(error), kind="rate_limit_error", code="overloaded", headers={"Retry-After": retry_after}
        )
    status = to_status(error)
    http_status, kind = _HTTP.get(status.code, (500, "server_error"))
    if isinstance(error, RequestError) and error.violations:
        message = "; ".join(f"{field_name(v.field)}: {v.description}" for v in error.violations)
        code = "request_too_large" if http_status == 413 else "invalid_value"
        return HttpError(http_status, message, kind=kind, param=field_name(error.violations[0].field), code=code)
    if status.code == code_pb2.RESOURCE_EXHAUSTED:  # from Triton: overloaded, not too large
        return HttpError(429, status.message, kind="rate_limit_error", code="overloaded")
    return HttpError(http_status, status.message, kind=kind)


def item_error(field: str, code: int, message: str) -> HttpError:
    """One image of a request failed: OpenAI's APIs fail the whole request, naming the input."""
    http_status, kind = _HTTP.get(code, (500, "server_error"))
    return HttpError(http_status, f"{field}: {message}", kind=kind, param=field, code="invalid_image")
