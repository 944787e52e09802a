"""SIGTERM to a gateway process: the call in flight finishes, new calls are refused, and the
process exits within its grace period."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from pathlib import Path

from clip_client import NO_RETRY, ClientConfig, ClipClient, ClipError
from tests.support.images import SMALL_JPEG
from tests.support.processes import wait_for
from tests.support.servers import GatewayProcess, LauncherTriton

# Long enough for the call in flight to finish on a loaded machine: it is several seconds unloaded,
# and took over 20 s in a CI run beside stress-ng with AVX2-only kernels (the gateway then cancelled
# it, as a grace period should). The gateway exits as soon as it has drained, so a long grace costs
# nothing when the call is quick.
GRACE = 90.0


def test_sigterm_drains_in_flight_calls_and_refuses_new_ones(tiny_triton: LauncherTriton, tmp_path: Path) -> None:
    gateway = GatewayProcess(tiny_triton.grpc_url, tmp_path, f"--shutdown-grace={GRACE}", "--max-labels=20000")
    try:
        outcome: dict[str, object] = {}
        # Several seconds of work on the tiny model: 32 images x 20,000 fresh labels.
        labels = [f"shutdown drain label {uuid.uuid4().hex[:8]} {i}" for i in range(20000)]

        def long_call() -> None:
            with ClipClient(config=ClientConfig(target=gateway.target, timeout=120, retry=NO_RETRY)) as client:
                try:
                    outcome["result"] = client.classify([SMALL_JPEG] * 32, labels)
                except ClipError as error:
                    outcome["error"] = error

        worker = threading.Thread(target=long_call)
        worker.start()
        wait_for(
            lambda: gateway.metric("clip_gateway_in_flight_requests", method="Classify") == 1, 30, "the call in flight"
        )
        sent = time.monotonic()
        gateway.process.signal(signal.SIGTERM)

        def new_call_refused() -> bool:
            with ClipClient(config=ClientConfig(target=gateway.target, timeout=5, retry=NO_RETRY)) as client:
                try:
                    client.model_info()
                except ClipError:
                    return True
            return False

        wait_for(new_call_refused, GRACE, "a new call refused after SIGTERM")
        assert worker.is_alive() and not outcome, "the long call ended before the refusal was observed"
        worker.join(120)
        assert "error" not in outcome, outcome.get("error")
        assert all(item.ok for item in outcome["result"])  # type: ignore[attr-defined]
        wait_for(lambda: not gateway.process.running(), GRACE, "the gateway exiting")
        assert time.monotonic() - sent < GRACE + 5  # the grace period, 5 s margin for interpreter exit
    finally:
        code = gateway.stop()
    assert code == 0
