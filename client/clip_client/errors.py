"""Errors raised by the clip-serve client.

    ClipError                        any failure of a call; .retry_after: the server's delay, if it gave one
    ├── InvalidRequestError          INVALID_ARGUMENT: fix the request; see .field_violations
    │   └── RequestTooLargeError     RESOURCE_EXHAUSTED: a size limit (request, image, pixels); never retried
    ├── RateLimitedError             RESOURCE_EXHAUSTED with a retry delay: this key's rate limit; retry later
    ├── AuthenticationError          UNAUTHENTICATED / PERMISSION_DENIED
    ├── DeadlineExceededError        DEADLINE_EXCEEDED: the call's timeout passed
    ├── CancelledError               CANCELLED
    ├── UnavailableError             UNAVAILABLE: the server or its models are not ready; retried
    │   └── OverloadedError          UNAVAILABLE with a retry delay: the server is busy; retried after it
    └── ServerError                  INTERNAL, UNKNOWN and anything else

The server says "busy, retry after" as data (a google.rpc.RetryInfo detail), never only in words.
`from_rpc_error` maps a grpc.RpcError to the most specific class and chains it as the cause.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request, as the server named it (e.g. "labels[3]")."""

    field: str
    description: str


class ClipError(Exception):
    """Base class: `code` is the gRPC status; `details` the server's message."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        details: str,
        *,
        code: grpc.StatusCode | None = None,
        field_violations: tuple[FieldViolation, ...] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(details)
        self.details = details
        if code is not None:
            self.code = code
        self.field_violations = field_violations
        self.retry_after = retry_after  # seconds, from the server's google.rpc.RetryInfo

    def __str__(self) -> str:
        fields = "; ".join(f"{v.field}: {v.description}" for v in self.field_violations)
        extra = f" ({fields})" if fields and fields not in self.details else ""
        return f"{self.code.name}: {self.details}{extra}"


class InvalidRequestError(ClipError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class RequestTooLargeError(InvalidRequestError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class RateLimitedError(ClipError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class AuthenticationError(ClipError):
    code = grpc.StatusCode.UNAUTHENTICATED


class DeadlineExceededError(ClipError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class CancelledError(ClipError):
    code = grpc.StatusCode.CANCELLED


class UnavailableError(ClipError):
    code = grpc.StatusCode.UNAVAILABLE


class OverloadedError(UnavailableError):
    pass


class ServerError(ClipError):
    code = grpc.StatusCode.INTERNAL


class NotFoundError(ClipError):
    """The server does not hold what the call names (a label set it evicted or never had)."""

    code = grpc.StatusCode.NOT_FOUND


_BY_CODE: dict[grpc.StatusCode, type[ClipError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequestError,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidRequestError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RequestTooLargeError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: AuthenticationError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: CancelledError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
}


def _details(status: status_pb2.Status | None) -> tuple[tuple[FieldViolation, ...], float | None]:
    """The field violations (google.rpc.BadRequest) and retry delay (google.rpc.RetryInfo) of a
    rich status."""
    violations: list[FieldViolation] = []
    retry_after = None
    for detail in status.details if status is not None else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend(FieldViolation(v.field, v.description) for v in bad_request.field_violations)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToMilliseconds() / 1000
    return tuple(violations), retry_after


def _typed(code: grpc.StatusCode, message: str, status: status_pb2.Status | None) -> ClipError:
    violations, retry_after = _details(status)
    error_class = _BY_CODE.get(code, ServerError)
    if retry_after is not None and code == grpc.StatusCode.UNAVAILABLE:
        error_class = OverloadedError
    elif retry_after is not None and code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        error_class = RateLimitedError
    return error_class(message, code=code, field_violations=violations, retry_after=retry_after)


def from_rpc_error(error: grpc.RpcError) -> ClipError:
    """The most specific ClipError for a failed call; raise it `from error`."""
    call = error if isinstance(error, grpc.Call) else None
    code = call.code() if call is not None else grpc.StatusCode.UNKNOWN
    details = (call.details() if call is not None else None) or str(error)
    status = None
    if call is not None:
        try:
            status = rpc_status.from_call(call)
        except ValueError:  # a malformed status from a non-conforming server
            status = None
    return _typed(code, details, status)


def from_rich_status(status: status_pb2.Status) -> ClipError:
    """The ClipError of a stream request's own status, as from_rpc_error for the unary call."""
    return _typed(_code(status.code), status.message, status)


def _code(value: int) -> grpc.StatusCode:
    return next((c for c in grpc.StatusCode if c.value[0] == value), grpc.StatusCode.UNKNOWN)


def from_status(code: int, message: str) -> ClipError:
    """A ClipError for a per-item google.rpc.Status (one image of a batch)."""
    status_code = _code(code)
    return _BY_CODE.get(status_code, ServerError)(message, code=status_code)


class OutputError(Exception):
    """Not a call's error: a folder job's output cannot be written or continued as asked (it exists
    without --resume, or it was written for another model or label set)."""
