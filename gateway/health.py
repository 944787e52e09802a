"""grpc.health.v1 status that follows Triton's model readiness.

SERVING while at least one Triton server behind `--triton-url` has every model the gateway needs
READY (calls are balanced across the ready ones); NOT_SERVING before that and when none has.
Model readiness only says that a model loaded: a Python stub that dies later leaves its model
READY in Triton 2.51, which is why the launcher watches the stubs and restarts Triton.
The served model's facts are read from a ready server each time the gateway becomes ready, so a
Triton restarted with another export is reported correctly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from gateway import metrics
from gateway.config import Limits, LimitsConflict, effective_limits
from gateway.errors import ServiceUnavailable
from gateway.triton_adapter import ServedModel, TritonAdapter

SERVICE_NAME = "clip.v1.ClipService"
log = logging.getLogger("gateway.health")


class HealthWatcher:
    def __init__(
        self, triton: TritonAdapter, servicer: health_aio.HealthServicer, interval: float, limits: Limits
    ) -> None:
        self.triton = triton
        self.servicer = servicer
        self.interval = interval
        self.configured_limits = limits
        self.ready = False
        self._served: ServedModel | None = None
        self._limits: Limits | None = None
        # Set when the gateway's own settings contradict the model repository: it must not serve.
        self.conflict: LimitsConflict | None = None
        self.conflict_found = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def _set(self, ready: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", SERVICE_NAME):
            await self.servicer.set(service, status)

    async def check_once(self) -> bool:
        states = {} if self._stopping else await self.triton.server_readiness()
        ready_servers = [address for address, ready in states.items() if ready]
        ready = bool(ready_servers)
        if ready and self._served is None:
            try:
                served = await self.triton.served_model(ready_servers[0])
                self._limits = effective_limits(self.configured_limits, served.max_batch_size, served.max_image_pixels)
                self._served = served
            except LimitsConflict as conflict:
                log.error("the gateway's limits contradict the model repository: %s", conflict)
                self.conflict = conflict
                self.conflict_found.set()
                ready = False
            except Exception as error:  # models just went away again: not ready after all
                log.warning("could not read the served model from Triton: %s", error)
                ready = False
        if not ready:
            self._served = None
        if ready != self.ready:
            log.info(
                "health %s",
                "SERVING" if ready else "NOT_SERVING",
                extra={"model_id": self._served.model_id if self._served else None},
            )
        self.ready = ready
        metrics.HEALTH.set(1 if ready else 0)
        await self._set(ready)
        return ready

    async def _run(self) -> None:
        while not self._stopping:
            await self.check_once()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="health-watcher")

    async def stop_serving(self) -> None:
        """Shutting down: report NOT_SERVING for good so balancers drain us."""
        self._stopping = True
        self.ready = False
        metrics.HEALTH.set(0)
        await self._set(False)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def served_model(self) -> ServedModel:
        """The model that answers; UNAVAILABLE while Triton's models are not ready."""
        if not self.ready or self._served is None:
            raise ServiceUnavailable("the model server is not ready; retry later")
        return self._served

    def limits(self) -> Limits:
        """The limits in force: the gateway's own with the model repository's filled in (once
        Triton has been ready; before that, the configured ones, which only bound parsing)."""
        return self._limits or self.configured_limits
