"""The gateway's only door to Triton: one shared tritonclient.grpc.aio client, over a channel that
balances calls per request (round_robin) across every server the target names.

Each call passes the caller's remaining deadline on as `client_timeout`; when a caller cancels,
the awaiting coroutine is cancelled and with it the gRPC call to Triton, which then cancels the
request inside Triton. A call that meets UNAVAILABLE (a server gone, a dropped connection) is
tried again, which round_robin sends to another server (every clip.v1 call is idempotent), at
most twice, within the caller's deadline.
Health asks each server on its own (`server_readiness`), so one ready server is enough to serve.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
from numpy.typing import NDArray
from tritonclient.utils import InferenceServerException

from clip_contract import models
from clip_contract import parameters as keys
from gateway import metrics
from gateway.triton_servers import resolve


@dataclass(frozen=True)
class ImageOutcomes:
    """Triton's per-image answer: a code (0 for a usable image) and a message for each image sent."""

    codes: NDArray[Any]  # int32 [sent], google.rpc codes
    messages: NDArray[Any]  # bytes [sent]

    @staticmethod
    def joined(parts: Sequence[ImageOutcomes]) -> ImageOutcomes:
        """The outcomes of consecutive parts of a batch, as one answer for the whole batch."""
        return ImageOutcomes(
            np.concatenate([part.codes for part in parts]), np.concatenate([part.messages for part in parts])
        )


@dataclass(frozen=True)
class ServedModel:
    """What the exporter recorded about the checkpoint, read back from Triton's model configs."""

    model_id: str
    revision: str
    variant: str
    precision: str
    embedding_dim: int
    shortest_edge: int  # the image's shorter side after the resize
    crop_size: int  # the side the image tower sees
    context_length: int
    scale: float
    max_batch_size: int  # of the image encoder: the most images one request may carry
    max_image_pixels: int  # the preprocessing model's limit per decoded image
    execution: str = ""  # how the encoders run and why (the exporter's line)


MAX_MESSAGE_BYTES = 2**31 - 1  # tritonclient's own default: the gateway has capped requests already
# Per-request balancing across every address of the target; gRPC's own retries stay off (ours are
# counted); reconnection to a server that went away is tried at least every 5 s, so it gets
# traffic soon after it is back; keepalive notices a silently dead server.
CHANNEL_ARGS = [
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.enable_retries", 0),
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
RETIRED_CHANNEL_GRACE = 60.0  # seconds a replaced channel keeps serving the calls already on it


def _connect(url: str) -> grpcclient_aio.InferenceServerClient:
    return grpcclient_aio.InferenceServerClient(url, channel_args=CHANNEL_ARGS)


# Worth trying on another server: this one is gone or going (UNAVAILABLE), or is up but has not
# loaded the model yet (NOT_FOUND, a Triton just restarted).
RETRYABLE = frozenset({"StatusCode.UNAVAILABLE", "StatusCode.NOT_FOUND"})


# The first retry goes at once (round_robin picks the next server); a later one waits a moment,
# for the channel to have noticed that a connection dropped, so it is not picked again.
ATTEMPTS = 3
RETRY_PAUSE = 0.05  # seconds, times the number of tries so far


def _retryable(error: InferenceServerException) -> bool:
    return str(error.status()) in RETRYABLE


def _outcomes(result: Any) -> ImageOutcomes:
    codes, messages = (result.as_numpy(tensor.name) for tensor in models.IMAGE_OUTCOMES)
    return ImageOutcomes(codes, messages)


def _usable_rows(rows: NDArray[Any], outcomes: ImageOutcomes) -> NDArray[Any]:
    """The rows of the usable images: with none usable, preprocessing sends the encoder one
    placeholder row (it takes no empty batch), which is no image's."""
    return rows[: int(np.count_nonzero(outcomes.codes == 0))]


def _strings(tensor: models.Tensor, items: Sequence[bytes | str]) -> grpcclient.InferInput:
    infer_input = grpcclient.InferInput(tensor.name, [len(items)], tensor.datatype)
    infer_input.set_data_from_numpy(
        np.array([i.encode() if isinstance(i, str) else i for i in items], dtype=np.object_)
    )
    return infer_input


class TritonAdapter:
    def __init__(self, url: str) -> None:
        self.url = url
        self.client = _connect(url)
        self.servers: tuple[str, ...] = ()  # host:port of each Triton the target names
        self._probes: dict[str, grpcclient_aio.InferenceServerClient] = {}  # one per server, for health
        self._retiring: set[asyncio.Task[None]] = set()

    async def _infer(self, model: str, inputs: list[grpcclient.InferInput], timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        for attempt in range(1, ATTEMPTS + 1):
            remaining = None if deadline is None else deadline - time.monotonic()
            started = time.perf_counter()
            try:
                # Not also as Triton's request timeout: Triton 2.51 does not pass it on to an
                # ensemble's steps (measured: no effect), so the gRPC deadline is what ends a call.
                time_left = {} if remaining is None else {keys.TIME_LEFT_US: max(1, int(remaining * 1e6))}
                return await self.client.infer(model, inputs, client_timeout=remaining, parameters=time_left)
            except InferenceServerException as error:
                metrics.TRITON_ERRORS.labels(model, str(error.status()).removeprefix("StatusCode.")).inc()
                pause = RETRY_PAUSE * (attempt - 1)
                if attempt == ATTEMPTS or not _retryable(error) or (deadline and deadline - time.monotonic() < pause):
                    raise
                metrics.TRITON_RETRIES.labels(model).inc()
                await asyncio.sleep(pause)
            finally:
                metrics.TRITON_LATENCY.labels(model).observe(time.perf_counter() - started)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def classify(
        self, images: Sequence[bytes], labels: Sequence[str], templates: Sequence[str], timeout: float | None
    ) -> tuple[tuple[NDArray[Any], NDArray[Any]], ImageOutcomes]:
        """LOGITS and PROBS [usable images, labels], and each image's outcome; templates are
        averaged per label inside Triton."""
        inputs = [_strings(models.IMAGE, images), _strings(models.TEXT, labels), _strings(models.TEMPLATES, templates)]
        result = await self._infer(models.CLASSIFY.name, inputs, timeout)
        outcomes = _outcomes(result)
        logits, probs = (result.as_numpy(tensor.name) for tensor in (models.LOGITS, models.PROBS))
        return (_usable_rows(logits, outcomes), _usable_rows(probs, outcomes)), outcomes

    async def embed_images(self, images: Sequence[bytes], timeout: float | None) -> tuple[NDArray[Any], ImageOutcomes]:
        """IMAGE_EMBEDS [usable images, dim], and each image's outcome."""
        result = await self._infer(models.EMBED_IMAGE.name, [_strings(models.IMAGE, images)], timeout)
        outcomes = _outcomes(result)
        return _usable_rows(result.as_numpy(models.IMAGE_EMBEDS.name), outcomes), outcomes

    async def embed_texts(self, texts: Sequence[str], timeout: float | None) -> tuple[NDArray[Any], NDArray[Any]]:
        """TEXT_EMBEDS [texts, dim] and TOKEN_COUNTS [texts]."""
        result = await self._infer(models.EMBED_TEXT.name, [_strings(models.TEXT, texts)], timeout)
        return result.as_numpy(models.TEXT_EMBEDS.name), result.as_numpy(models.TOKEN_COUNTS.name)

    async def server_readiness(
        self, names: Sequence[str] = models.PUBLIC_MODEL_NAMES, timeout: float = 2.0
    ) -> dict[str, bool]:
        """Each server the target names now -> whether all of `names` are READY on it (loaded:
        a model still loading is not; a stub that dies later leaves its model READY, which is why the
        launcher watches the stubs). When the set of servers changes, the balancing channel is
        renewed so that new ones get calls."""
        servers = await resolve(self.url)
        if servers != self.servers:
            if self.servers:  # not at start: the channel made then already saw this set
                self._renew_channel()
            self.servers = servers
        for address in set(self._probes) - set(servers):
            await self._probes.pop(address).close()
        checks = await asyncio.gather(*(self._ready(address, names, timeout) for address in servers))
        states = dict(zip(servers, checks, strict=True))
        metrics.TRITON_SERVERS.labels("ready").set(sum(states.values()))
        metrics.TRITON_SERVERS.labels("not_ready").set(len(states) - sum(states.values()))
        return states

    async def _ready(self, address: str, names: Sequence[str], timeout: float) -> bool:
        probe = self._probes.get(address)
        if probe is None:
            probe = self._probes[address] = _connect(address)
        try:
            async with asyncio.timeout(timeout):
                checks = await asyncio.gather(*(probe.is_model_ready(name) for name in names))
        except (InferenceServerException, TimeoutError, OSError):
            return False
        return all(checks)

    def _renew_channel(self) -> None:
        """A new channel resolves the target again; the old one finishes its calls, then closes."""
        retired, self.client = self.client, _connect(self.url)

        async def close_later() -> None:
            await asyncio.sleep(RETIRED_CHANNEL_GRACE)
            await retired.close()

        task = asyncio.get_running_loop().create_task(close_later(), name="retire-triton-channel")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def served_model(self, address: str) -> ServedModel:
        """What the exporter recorded, read from the server at `address` (a ready one)."""
        probe = self._probes.get(address) or self.client

        async def config(model: models.Model) -> dict[str, Any]:
            return dict((await probe.get_model_config(model.name, as_json=True))["config"])

        classify, similarity, tokenize, encoder, preprocess = [
            await config(model)
            for model in (
                models.CLASSIFY,
                models.SIMILARITY,
                models.TOKENIZE,
                models.IMAGE_ENCODER,
                models.PREPROCESS_IMAGE,
            )
        ]

        def parameter(config: dict[str, Any], key: str) -> str:
            return str(config.get("parameters", {}).get(key, {}).get("string_value", ""))

        return ServedModel(
            model_id=parameter(classify, keys.MODEL_ID),
            revision=parameter(classify, keys.REVISION),
            variant=parameter(classify, keys.VARIANT),
            precision=parameter(classify, keys.PRECISION),
            embedding_dim=int(parameter(classify, keys.EMBEDDING_DIM) or 0),
            shortest_edge=int(parameter(preprocess, keys.SHORTEST_EDGE) or 0),
            crop_size=int(parameter(preprocess, keys.CROP_SIZE) or 0),
            context_length=int(parameter(tokenize, keys.CONTEXT_LENGTH) or 0),
            scale=math.exp(float(parameter(similarity, keys.LOGIT_SCALE) or 0.0)),
            max_batch_size=int(encoder.get("max_batch_size", 0)),
            max_image_pixels=int(parameter(preprocess, keys.MAX_IMAGE_PIXELS)),
            execution=parameter(classify, keys.EXECUTION),
        )

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        for probe in self._probes.values():
            await probe.close()
        self._probes.clear()
        await self.client.close()
