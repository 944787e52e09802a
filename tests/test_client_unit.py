"""Small pieces of the client, without a server: errors, retries, image inputs, the public API."""

from __future__ import annotations

import importlib
import inspect

import grpc
import numpy as np
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

import clip_client
from clip_client import errors
from clip_client._base import CallBudget
from clip_client.config import RetryPolicy
from clip_client.images import to_bytes


class FakeCall(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """A failed call as grpc raises it; only what from_rpc_error reads."""

    def __init__(self, code: grpc.StatusCode, details: str, status: status_pb2.Status | None = None) -> None:
        self._code, self._details, self._status = code, details, status

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self):  # type: ignore[no-untyped-def]
        return () if self._status is None else (("grpc-status-details-bin", self._status.SerializeToString()),)

    def initial_metadata(self):  # type: ignore[no-untyped-def]
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback) -> bool:  # type: ignore[no-untyped-def]
        return False


def test_public_all_is_complete() -> None:
    exported = set(clip_client.__all__)
    for module_name in ("errors", "types", "config", "sync", "aio"):
        module = importlib.import_module(f"clip_client.{module_name}")
        public = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and (inspect.isclass(value) or name.isupper())
            and getattr(value, "__module__", module.__name__) == module.__name__
        }
        assert public <= exported, f"clip_client.{module_name} has public names missing from __all__"
    assert all(hasattr(clip_client, name) for name in exported)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidRequestError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.RequestTooLargeError),
        (grpc.StatusCode.UNAUTHENTICATED, errors.AuthenticationError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceededError),
        (grpc.StatusCode.UNAVAILABLE, errors.UnavailableError),
        (grpc.StatusCode.CANCELLED, errors.CancelledError),
        (grpc.StatusCode.INTERNAL, errors.ServerError),
        (grpc.StatusCode.DATA_LOSS, errors.ServerError),
    ],
)
def test_rpc_errors_map_to_the_most_specific_class(code: grpc.StatusCode, expected: type) -> None:
    error = errors.from_rpc_error(FakeCall(code, "why"))
    assert error.code == code and error.details == "why"
    assert type(error) is expected


def test_field_violations_are_readable() -> None:
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[error_details_pb2.BadRequest.FieldViolation(field="labels[2]", description="empty")]
        )
    )
    status = status_pb2.Status(code=3, message="bad labels", details=[detail])
    error = errors.from_rpc_error(FakeCall(grpc.StatusCode.INVALID_ARGUMENT, "bad labels", status))
    assert error.field_violations == (errors.FieldViolation("labels[2]", "empty"),)
    assert "labels[2]: empty" in str(error)


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(initial_backoff=0.1, multiplier=2.0, max_backoff=0.5)
    assert [policy.backoff(n) for n in (1, 2, 3, 4, 10)] == [0.1, 0.2, 0.4, 0.5, 0.5]


def status_with(code: grpc.StatusCode, message: str, *details: object) -> status_pb2.Status:
    """A rich status (its code and message must be the call's own, or grpc_status ignores it)."""
    packed = []
    for detail in details:
        wrapper = any_pb2.Any()
        wrapper.Pack(detail)
        packed.append(wrapper)
    return status_pb2.Status(code=code.value[0], message=message, details=packed)


def retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromMilliseconds(int(seconds * 1000))
    return info


def test_only_listed_codes_are_retried_and_never_past_the_deadline() -> None:
    client = clip_client.ClipClient(
        "127.0.0.1:1", config=clip_client.ClientConfig(retry=RetryPolicy(max_attempts=3, initial_backoff=0.01))
    )
    try:
        unavailable = errors.from_rpc_error(FakeCall(grpc.StatusCode.UNAVAILABLE, "down"))
        assert client._retry_delay(unavailable, 1, CallBudget(10.0)) is not None
        assert client._retry_delay(unavailable, 3, CallBudget(10.0)) is None  # attempts used up
        assert client._retry_delay(unavailable, 1, CallBudget(0.0)) is None  # no time left
        invalid = errors.from_rpc_error(FakeCall(grpc.StatusCode.INVALID_ARGUMENT, "bad"))
        assert client._retry_delay(invalid, 1, CallBudget(10.0)) is None
    finally:
        client.close()


def test_busy_is_retried_after_the_servers_delay_and_too_large_never() -> None:
    """UNAVAILABLE with RetryInfo is the server's "busy"; RESOURCE_EXHAUSTED without it is "too
    large" (the caller's fault), with it a rate limit."""
    busy_call = FakeCall(
        grpc.StatusCode.UNAVAILABLE, "busy", status_with(grpc.StatusCode.UNAVAILABLE, "busy", retry_info(1.5))
    )
    busy = errors.from_rpc_error(busy_call)
    assert isinstance(busy, clip_client.OverloadedError) and busy.retry_after == 1.5
    too_large = errors.from_rpc_error(FakeCall(grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max"))
    assert isinstance(too_large, clip_client.RequestTooLargeError) and too_large.retry_after is None
    limited_call = FakeCall(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "rate",
        status_with(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate", retry_info(0.25)),
    )
    limited = errors.from_rpc_error(limited_call)
    assert isinstance(limited, clip_client.RateLimitedError) and not isinstance(
        limited, clip_client.InvalidRequestError
    )
    client = clip_client.ClipClient(
        "127.0.0.1:1", config=clip_client.ClientConfig(retry=RetryPolicy(initial_backoff=0.01))
    )
    try:
        assert client._retry_delay(busy, 1, CallBudget(10.0)) == 1.5  # not sooner than the server asked
        assert client._retry_delay(busy, 1, CallBudget(1.0)) is None  # the delay would pass the budget
        assert client._retry_delay(limited, 1, CallBudget(10.0)) == 0.25
        assert client._retry_delay(too_large, 1, CallBudget(10.0)) is None
    finally:
        client.close()


def test_unreachable_server_is_unavailable_after_retries() -> None:
    config = clip_client.ClientConfig(
        target="127.0.0.1:1", timeout=3.0, retry=RetryPolicy(max_attempts=2, initial_backoff=0.01)
    )
    with clip_client.ClipClient(config=config) as client, pytest.raises(clip_client.UnavailableError):
        client.model_info()


def test_image_inputs_are_checked() -> None:
    with pytest.raises(TypeError, match="cannot send a int as an image"):
        to_bytes(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="HxW, HxWx3 or HxWx4"):
        to_bytes(np.zeros((4, 4, 2), dtype=np.uint8))
    assert to_bytes(np.zeros((4, 4), dtype=np.uint8)).startswith(b"\x89PNG")
    with pytest.raises(TypeError, match="labels must be a sequence"):
        clip_client.ClipClient("127.0.0.1:1")._classify_request(b"x", "cat", None, 0)
