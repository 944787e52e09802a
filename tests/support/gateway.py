"""A real gateway on a free port, run on its own event loop in a background thread, so that tests
can call it with the blocking client as well as the async one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from gateway.config import GatewayConfig
from gateway.server import Gateway

T = TypeVar("T")


class GatewayThread:
    def __init__(self, config: GatewayConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gateway", daemon=True)
        self.thread.start()
        try:
            self.gateway: Gateway = self.run(Gateway.start(config))
        except BaseException:
            self._end_loop()
            raise
        self.target = f"127.0.0.1:{self.gateway.port}"

    @property
    def http_base(self) -> str:
        assert self.gateway.http is not None, "this gateway has no HTTP API (http_listen)"
        return f"http://127.0.0.1:{self.gateway.http.port}"

    @property
    def metrics_url(self) -> str:
        assert self.gateway.metrics_endpoint is not None, "this gateway has no metrics endpoint"
        return f"http://127.0.0.1:{self.gateway.metrics_endpoint.port}/metrics"

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def wait_ready(self, ready: bool = True, timeout: float = 30.0) -> None:
        async def poll() -> None:
            async with asyncio.timeout(timeout):
                while self.gateway.health.ready != ready:
                    await asyncio.sleep(0.05)

        self.run(poll(), timeout + 5)

    def stop(self, grace: float = 1.0) -> None:
        try:
            self.run(self.gateway.stop(grace))
        finally:
            self._end_loop()

    def _end_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        assert not self.thread.is_alive(), "the gateway's event loop did not stop"
        self.loop.close()


def gateway_config(triton_url: str, **overrides: Any) -> GatewayConfig:
    settings: dict[str, Any] = {"metrics_listen": "127.0.0.1:0", **overrides}
    return GatewayConfig(listen="127.0.0.1:0", triton_url=triton_url, health_interval=0.2, **settings)
