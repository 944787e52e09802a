"""The one place where failures become gRPC statuses.

Request problems found by the gateway are `RequestError`s carrying field violations; Triton's
failures arrive as `InferenceServerException`s. `to_status` maps both (and anything unexpected)
to a google.rpc.Status; no traceback or internal text ever reaches a client.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from tritonclient.utils import InferenceServerException

from gateway.admission import Busy, RateLimited
from gateway.byte_budget import InFlightFull
from gateway.calls import Field

log = logging.getLogger("gateway.errors")


@dataclass(frozen=True)
class Violation:
    field: Field
    description: str


class RequestError(Exception):
    """The request breaks a rule; `code` is INVALID_ARGUMENT or RESOURCE_EXHAUSTED."""

    def __init__(self, code: grpc.StatusCode, violations: list[Violation]) -> None:
        super().__init__("; ".join(f"{v.field.path}: {v.description}" for v in violations))
        self.code = code
        self.violations = violations


NOT_READY_RETRY = 1.0  # seconds a caller is told to wait when the model server is not ready


class ServiceUnavailable(Exception):
    """The gateway cannot answer now (Triton or its models not ready); the caller may retry."""


def invalid(field: Field, description: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, [Violation(field, description)])


# Triton statuses we pass on as they are; everything else is INTERNAL.
_TRITON_CODES = {
    "StatusCode.INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "StatusCode.UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "StatusCode.DEADLINE_EXCEEDED": grpc.StatusCode.DEADLINE_EXCEEDED,
    "StatusCode.CANCELLED": grpc.StatusCode.CANCELLED,
    "StatusCode.RESOURCE_EXHAUSTED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "StatusCode.NOT_FOUND": grpc.StatusCode.UNAVAILABLE,  # a model not loaded: the service is not ready
}
# Our Python models word their INVALID_ARG errors for clients; Triton wraps them in context, which
# is taken off for the caller (the wording only: no decision depends on the text).
_OWN_MESSAGE = re.compile(r"(?:in ensemble '[^']+', )?(?:\[request id: [^\]]*\] )?(?P<message>.*)", re.DOTALL)


def triton_status(error: InferenceServerException) -> tuple[grpc.StatusCode, str]:
    code = _TRITON_CODES.get(str(error.status()), grpc.StatusCode.INTERNAL)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        match = _OWN_MESSAGE.match(error.message() or "")
        return code, (match["message"] if match else "invalid request").strip()
    if code == grpc.StatusCode.INTERNAL:
        log.error("triton failure: %s %s", error.status(), error.message())
        return code, "inference failed inside the model server"
    if code == grpc.StatusCode.UNAVAILABLE:
        log.warning("triton unavailable: %s %s", error.status(), error.message())
        return code, "the model server is unavailable; retry later"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return code, "deadline exceeded while waiting for the model server"
    return code, "the model server cancelled the request"


def to_status(error: BaseException) -> status_pb2.Status:
    """A google.rpc.Status (with BadRequest details where fields are at fault) for any failure."""
    if isinstance(error, RequestError):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field.path, description=v.description)
                for v in error.violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        return status_pb2.Status(code=error.code.value[0], message=str(error), details=[detail])
    if isinstance(error, ServiceUnavailable):
        # With the delay as data (RetryInfo), as for busy: Triton restarting or replaced is back soon.
        return status_pb2.Status(code=code_pb2.UNAVAILABLE, message=str(error), details=[_retry(NOT_READY_RETRY)])
    if isinstance(error, RateLimited):
        # The caller's own quota, not a size limit: QuotaFailure names it, RetryInfo says when.
        quota = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(subject=f"api key {error.tenant}", description=str(error))
            ]
        )
        return status_pb2.Status(
            code=code_pb2.RESOURCE_EXHAUSTED, message=str(error), details=[_any(quota), _retry(error.retry_after)]
        )
    if isinstance(error, Busy | InFlightFull):
        # Retryable, with the delay as data: google.rpc.RetryInfo, which clients honour.
        return status_pb2.Status(code=code_pb2.UNAVAILABLE, message=str(error), details=[_retry(error.retry_after)])
    if isinstance(error, InferenceServerException):
        code, message = triton_status(error)
        # UNAVAILABLE from Triton (restarting, replaced): retryable, with the delay as data.
        details = [_retry(NOT_READY_RETRY)] if code == grpc.StatusCode.UNAVAILABLE else []
        return status_pb2.Status(code=code.value[0], message=message, details=details)
    log.exception("unexpected gateway failure", exc_info=error)
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error in the gateway")


def _any(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _retry(seconds: float) -> any_pb2.Any:
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromMilliseconds(int(seconds * 1000))
    return _any(retry)
