"""The HTTP API's 503 (model server not ready), 504 (deadline) and 429 (at the concurrency cap,
with Retry-After) from the real app in a real gateway, not a stand-in."""

from __future__ import annotations

import base64
import threading
import uuid
from pathlib import Path
from typing import Any

from clip_client import ClientConfig, ClipClient
from gateway.config import Limits
from launcher.server import free_port
from tests.support import servers
from tests.support.gateway import gateway_config
from tests.support.images import SMALL_JPEG
from tests.support.processes import wait_for
from tests.support.servers import LauncherTriton
from tests.test_http_api import http

IMAGE = "data:image/jpeg;base64," + base64.b64encode(SMALL_JPEG).decode()


def classification(labels: list[str], images: int = 1) -> dict[str, Any]:
    return {"image": [IMAGE] * images, "labels": labels}


def test_503_while_the_model_server_is_not_ready(tmp_path: Path) -> None:
    nowhere = f"127.0.0.1:{free_port()}"  # no Triton there
    with servers.gateway(gateway_config(nowhere, http_listen="127.0.0.1:0"), ready=False) as gateway:
        status, _, body = http(gateway.http_base, "POST", "/v1/classifications", classification(["cat"]), key=None)
        assert status == 503 and "not ready" in body["error"]["message"]
        status, _, body = http(gateway.http_base, "GET", "/v1/health/ready", key=None)
        assert status == 503


def test_504_when_the_call_outlives_its_deadline(tiny_triton: LauncherTriton) -> None:
    limits = Limits(max_labels=5000, max_prompts=5000)
    config = gateway_config(tiny_triton.grpc_url, http_listen="127.0.0.1:0", default_timeout=0.1, limits=limits)
    run = uuid.uuid4().hex[:8]  # labels no earlier test has put in the label cache
    labels = [f"http deadline label {run} {i}" for i in range(5000)]  # new prompts: seconds of work
    with servers.gateway(config) as gateway:
        status, _, body = http(gateway.http_base, "POST", "/v1/classifications", classification(labels, 8))
        assert status == 504, body
        assert body["error"]["type"] and "deadline" in body["error"]["message"]
        # and the gateway goes on serving (a gRPC call brings its own, longer deadline; Triton
        # first finishes the abandoned steps, which 2.51 does not cancel)
        with ClipClient(config=ClientConfig(target=gateway.target, timeout=120)) as client:
            assert client.classify(SMALL_JPEG, ["cat"])[0].ok


def test_429_with_retry_after_at_the_concurrency_cap(tiny_triton: LauncherTriton) -> None:
    def images_done() -> float:
        return servers.metric(
            tiny_triton.metrics_url, "nv_inference_request_success", model="clip_preprocess_image", version="1"
        )

    config = gateway_config(tiny_triton.grpc_url, http_listen="127.0.0.1:0", max_concurrent_rpcs=1)
    labels = [f"slow http label {uuid.uuid4().hex[:8]} {i}" for i in range(1000)]
    with servers.gateway(config) as gateway:
        before = images_done()
        answers: list[int] = []
        slow = threading.Thread(
            target=lambda: answers.append(
                http(gateway.http_base, "POST", "/v1/classifications", classification(labels, 8))[0]
            )
        )
        slow.start()
        try:
            wait_for(lambda: images_done() > before, 30, "the slow request inside Triton")
            assert slow.is_alive()
            status, headers, body = http(gateway.http_base, "POST", "/v1/classifications", classification(["cat"]))
        finally:
            slow.join(120)
        assert status == 429 and body["error"]["code"] == "overloaded"
        assert int(headers["retry-after"]) >= 1
        assert answers == [200]
        status, _, _ = http(gateway.http_base, "POST", "/v1/classifications", classification(["cat"]))
        assert status == 200  # the slot came back
