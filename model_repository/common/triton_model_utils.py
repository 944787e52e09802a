"""Helpers shared by the Python-backend models of clip-serve.

The exporter copies this file into every Python model's version folder, where the Python
backend finds it on `sys.path`; it is never loaded as a model itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import triton_python_backend_utils as pb_utils

from clip_contract import parameters


def model_config(args: dict[str, str]) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(args["model_config"])
    return config


def parameter(config: dict[str, Any], key: str, default: str | None = None) -> str:
    """A `parameters { key: ... }` string value from config.pbtxt."""
    entry = config.get("parameters", {}).get(key)
    if entry is None:
        if default is None:
            raise pb_utils.TritonModelException(f"config.pbtxt lacks the parameter {key!r}")
        return default
    return str(entry["string_value"])


def invalid_argument(message: str) -> Any:
    """A per-request error: the request is bad, the model is fine."""
    return pb_utils.InferenceResponse(
        output_tensors=[], error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
    )


def call_over(request: Any) -> Callable[[], bool]:
    """A check of whether the call `request` serves has ended: cancelled (a direct caller), or past
    the time the gateway said it had left (parameters.TIME_LEFT_US), counted from now. Triton 2.51
    passes neither an ensemble's deadline nor its cancellation on to the ensemble's steps, only
    its parameters: without this an abandoned call's images and texts were worked through to the
    end (32 large images: 12.4 s for nobody)."""
    received = time.monotonic()
    value = json.loads(request.parameters() or "{}").get(parameters.TIME_LEFT_US)
    end = None if value is None else received + int(value) / 1e6

    def over() -> bool:
        return bool(request.is_cancelled()) or (end is not None and time.monotonic() > end)

    return over


def cancelled() -> Any:
    return pb_utils.InferenceResponse(
        output_tensors=[], error=pb_utils.TritonError("request cancelled", pb_utils.TritonError.CANCELLED)
    )


def decode_strings(request: Any, name: str) -> list[bytes]:
    """A TYPE_STRING input of any shape as a flat list of raw byte strings."""
    array = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
    return [item if isinstance(item, bytes) else bytes(item) for item in array.reshape(-1)]
